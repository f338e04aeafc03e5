"""``python -m repro preflight TABLE --profile paper``: a paper profile checked on this machine.

For every row that pre-trains: the exact resolved config (same model, width, stem, heads,
norms, optimizer and schedules), its figures (global batch, peak lr, m_base after the
equivalence rule, total and warm-up steps, parameter count, cost estimate), and one real
optimizer step of the loop's own step function (``train.step.train_step``, LARS or SGD as
configured) at the row's image size on 2 images per view, which fails on a shape the model
cannot take. With ``--data-root`` the row's dataset files are checked too.

Not built yet (issue 16, section 2): the multi-process steps through ``pretrain`` on gloo,
generated on-disk data, the probe pass, transfer rows.

Any failure is one line naming the table, profile and row (:class:`PreflightError`).
"""

from __future__ import annotations

import time

import torch

from ..config import ConfigError
from ..data.datasets import DatasetNotFound, check_available
from ..grid import Run, expand, load_table, with_overrides
from ..models.backbones import model_from_config
from ..results.cost import PRETRAIN_IMAGES, estimate
from ..train.pretrain import build_optimizer
from ..train.step import schedule_for, train_step
from ..core.schedules import steps_per_epoch


class PreflightError(ConfigError):
    """A row of a profile would fail on the cluster; the message names the row."""


def check_row(run: Run, *, data_root: str | None = None, probe_images: int = 2) -> dict:
    """The figures of one pre-training row, after one real step; raises PreflightError."""
    cfg = run.config
    where = f"{run.table} --profile {run.profile}, row {run.row}"
    try:
        if data_root is not None:
            check_available(cfg.data.dataset, data_root)
        images = PRETRAIN_IMAGES.get(cfg.data.dataset)
        spe = steps_per_epoch(images, cfg.train.global_batch_size) if images else None
        schedule = schedule_for(cfg, spe) if spe else None
        size = cfg.data.image_size
        if size < 1:
            raise ValueError(f"data.image_size {size} is not a positive number of pixels")
        torch.manual_seed(cfg.train.seed)
        model = model_from_config(cfg).train()
        optimizer = build_optimizer(model, cfg)
        views = [torch.randn(probe_images, 3, size, size) for _ in range(2)]
        start = time.perf_counter()
        loss = train_step(model, optimizer, *views, lr=cfg.peak_lr, tau=1 - cfg.m_base, alpha=0.5)
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise ValueError(f"the first step's loss is {float(loss)}")
    except (ConfigError, DatasetNotFound, ValueError, RuntimeError) as e:
        message = " ".join(str(e).split())  # one line
        raise PreflightError(f"preflight {where}: {type(e).__name__}: {message}") from None
    return {
        "row": run.row,
        "global_batch": cfg.train.global_batch_size,
        "per_process": f"{cfg.train.world_size} x {cfg.train.bn_batch_size}",
        "peak_lr": cfg.peak_lr,
        "m_base": cfg.m_base,
        "total_steps": schedule.total_steps if schedule else None,
        "warmup_steps": schedule.warmup_steps if schedule else None,
        "params_student": sum(p.numel() for p in model.student.parameters()),
        "step_s_here": seconds,
    }


def preflight(table_name: str, profile: str, *, data_root: str | None = None, out=print) -> list[dict]:
    """Check every pre-training row of ``table_name`` at ``profile``; print one line per row."""
    table = load_table(table_name)
    runs = expand(table, profile)
    if data_root is not None:
        runs = [with_overrides(r, {"data": {"root": data_root}}) for r in runs]
    costs = {c.run_id: c for c in estimate(table, runs)}
    rows = []
    out(f"preflight {table.name} --profile {profile}: {len(runs)} runs")
    for run in runs:
        if run.config.task != "pretrain":
            out(f"  {run.row}: {run.config.task} row, not checked by this preflight yet")
            continue
        fig = check_row(run, data_root=data_root)
        cost = costs[run.run_id]
        fig["gpu_hours"] = cost.gpu_hours
        rows.append(fig)
        hours = f"{cost.gpu_hours:,.1f} GPU-h" if cost.gpu_hours is not None else "cost unknown"
        out(f"  {fig['row']}: global batch {fig['global_batch']:,} ({fig['per_process']}), peak lr {fig['peak_lr']:.4g}, "
            f"m_base {fig['m_base']:.4g}, steps {fig['total_steps']:,} (warm-up {fig['warmup_steps']:,}), "
            f"student {fig['params_student'] / 1e6:.2f} M parameters, one step of 2 images here "
            f"{fig['step_s_here']:.2f} s, {hours}")
    out(f"preflight {table.name} --profile {profile}: OK ({len(rows)} pre-training rows checked)")
    return rows
