"""The pre-trained backbone a transfer run starts from (tasks finetune and detection).

`resolve_backbone(cfg, runs_root)` returns a torchvision ResNet state dict (no `fc`) for
`cfg.pretrained`: either an explicit file (`path`: a torchvision state dict such as torchvision's
own ImageNet weights, or a checkpoint of this suite) or a pre-training run of this suite named
by (table, profile, row, seed), whose latest checkpoint is read when the job STARTS (SPEC §6:
never a path baked in at submission).

FIDELITY: the teacher's backbone by default (`pretrained.which`), with its Momentum BN history as
BN running statistics, as the paper transfers it; the student is an option.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..train import checkpoint as ckpt
from ..models.backbones import resnet
from ..config import ConfigError, DetectionConfig, FinetuneConfig
from ..rundir import RunDir
from .export import backbone_state_dict


def _check_loads(state: Mapping[str, torch.Tensor], cfg: FinetuneConfig | DetectionConfig, source: str) -> dict[str, torch.Tensor]:
    """Drop a classifier and check the weights load strictly into the run's ResNet."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    m = cfg.model
    encoder = resnet(m.arch, width=m.width, small_stem=m.small_stem)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise ConfigError(f"{source}: does not fit model {m.arch} width {m.width} small_stem {m.small_stem} "
                          f"(set model.* to the pre-trained network's): {detail[:240]}") from None
    return dict(state)


def _from_path(cfg: FinetuneConfig | DetectionConfig) -> dict[str, torch.Tensor]:
    path = Path(os.path.expanduser(cfg.pretrained.path))
    if not path.is_file():
        raise ConfigError(f"pretrained.path: no such file {path}")
    if path.suffix == ".pkl":
        raise ConfigError(f"pretrained.path: {path} is a Detectron2 weight file; give the torchvision state "
                          f"dict (.pth) or a checkpoint of this suite")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding pickled objects
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"pretrained.path: {path} is not a weights-only torch file ({reason[:160]})") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"pretrained.path: {path} holds a {type(state).__name__}, not a state dict")
    if isinstance(state.get("model"), Mapping):  # a checkpoint of this suite
        try:
            state = backbone_state_dict(state["model"], which=cfg.pretrained.which)
        except ValueError as e:
            raise ConfigError(f"pretrained.path: {path}: {e}") from None
    elif isinstance(state.get("state_dict"), Mapping):  # a common wrapper (e.g. torchvision references)
        state = state["state_dict"]
    return _check_loads(state, cfg, f"pretrained.path {path}")


def pretraining_run(cfg: FinetuneConfig | DetectionConfig):
    """The `repro.grid.Run` that `cfg.pretrained` names (table, profile, row, seed)."""
    from ..grid import expand, load_table

    p = cfg.pretrained
    missing = [k for k in ("table", "profile", "row") if getattr(p, k) is None]
    if missing:
        raise ConfigError(f"pretrained: set pretrained.{missing[0]} (a pre-training run is named by table, "
                          f"profile, row and seed) or pretrained.path")
    runs = expand(load_table(p.table), p.profile)
    for run in runs:
        if run.row == p.row and run.seed == p.seed:
            if run.config.task != "pretrain":
                raise ConfigError(f"pretrained: {p.table} row {p.row} is a {run.config.task} run, not a pre-training")
            return run
    rows = sorted({r.row for r in runs})
    seeds = sorted({r.seed for r in runs if r.row == p.row})
    if p.row in rows:
        raise ConfigError(f"pretrained.seed: {p.table} --profile {p.profile} row {p.row} has seeds {seeds}, not {p.seed}")
    raise ConfigError(f"pretrained.row: {p.table} --profile {p.profile} has no runnable row {p.row!r} "
                      f"(rows: {', '.join(rows)})")


def verify_final_checkpoint(run_dir: RunDir, latest: Path) -> None:
    """Refuse a checkpoint that is not the one the pre-training finished with (ConfigError, one line).

    final.json records the final checkpoint and its sha256 (`checkpoint.final_record`); a run
    finished before that was recorded (the committed results/cpu records) is accepted unchecked.
    """
    final = json.loads(run_dir.final.read_text())
    expected = final.get("final_checkpoint_sha256")
    if expected is None:
        return
    fix = f"restore it, or remove {run_dir} and pre-train it again"
    name = final.get("final_checkpoint")
    if name is not None and (run_dir.path / name).resolve() != latest.resolve():
        raise ConfigError(f"pretrained: {latest} is not the checkpoint the run finished with ({name} in "
                          f"{run_dir.final}): {fix}")
    got = ckpt.sha256(latest)
    if got != expected:
        raise ConfigError(f"pretrained: {latest} changed after the run finished (sha256 {got[:12]}..., "
                          f"{run_dir.final} records {expected[:12]}...): {fix}")


def resolve_backbone(cfg: FinetuneConfig | DetectionConfig, runs_root: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The torchvision backbone state dict of `cfg.pretrained` (see the module docstring).

    Raises ConfigError (one line) when the source is not set, not found, not finished, or does
    not fit `cfg.model`.
    """
    if cfg.pretrained.path is not None:
        return _from_path(cfg)
    p = cfg.pretrained
    run = pretraining_run(cfg)
    m, pm = cfg.model, run.config.model
    if (m.arch, m.width, m.small_stem) != (pm.arch, pm.width, pm.small_stem):
        raise ConfigError(f"model: this run's ResNet ({m.arch}, width {m.width}, small_stem {m.small_stem}) is not "
                          f"the pre-trained one of {p.table} {p.profile} {p.row} ({pm.arch}, width {pm.width}, "
                          f"small_stem {pm.small_stem})")
    run_dir = RunDir.of(run, runs_root)
    if not run_dir.final.is_file():
        raise ConfigError(f"pretrained: {p.table} --profile {p.profile} row {p.row} seed {p.seed} has not finished "
                          f"({run_dir} has no {RunDir.FINAL}): pre-train it first: "
                          f"python -m repro run {p.table} --profile {p.profile}")
    why = run_dir.diverged()
    if why is not None:
        raise ConfigError(f"pretrained: {p.table} --profile {p.profile} row {p.row} seed {p.seed} has no backbone: its "
                          f"pre-training diverged ({why}; {run_dir.final}); choose another row or seed")
    found = ckpt.checkpoints(run_dir.path)
    if not found:
        raise ConfigError(f"pretrained: {run_dir} has {RunDir.FINAL} but no checkpoint in {run_dir.checkpoints}: "
                          f"remove the run directory and pre-train it again")
    verify_final_checkpoint(run_dir, found[-1])
    state = ckpt.load(found[-1])
    try:
        backbone = backbone_state_dict(state["model"], which=p.which)
    except ValueError as e:
        raise ConfigError(f"pretrained: {found[-1]}: {e}") from None
    return _check_loads(backbone, cfg, str(found[-1]))
