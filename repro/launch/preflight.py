"""``python -m repro preflight TABLE --profile paper``: a paper profile checked on this machine.

For every row that pre-trains: the exact resolved config (same model, width, stem, heads,
norms, optimizer and schedules), its figures (global batch, peak lr, m_base after the
equivalence rule, total and warm-up steps, parameter count, cost estimate), and one real
optimizer step of the loop's own step function (``train.step.train_step``, LARS or SGD as
configured) at the row's image size on 2 images per view and device, which fails on a shape the
model cannot take. That step also measures the activations autograd keeps per image, from which
the memory of one process at the row's full batch is estimated. With ``--data-root`` the row's
dataset files are checked too.

Then the row runs through the real loop (``train.pretrain.pretrain``) in 2 processes joined
on gloo, so Synced BN, shuffling BN and Momentum BN really communicate: a few optimizer steps
at the row's per-process batch, on the user's files (``--data-root``) or, without them, on a
small dataset generated in the real on-disk format (``repro.data.ondisk``: STL10 ``.bin``
files, an ImageNet folder of JPEGs), then a probe pass (features, one linear-probe epoch and
the kNN probe) on a few batches of the probe splits. Each process reports its peak memory
(RSS) and its seconds per step.

Transfer rows (:func:`check_transfer_row`) start from the backbone their pre-training row
builds (fresh weights of that row's exact model, or the user's ``pretrained.path``): it must
load strictly into the transfer model. Detection rows export it to Detectron2's format and
compute their Detectron2 config (iterations, steps, warm-up, lr, norm); where Detectron2 is
installed the detector is built and the exported weights loaded, with no backbone key missing
or left over. Fine-tuning rows run one optimizer step of the classifier at the row's image
size and micro-batch.

Any failure is one line naming the table, profile and row (:class:`PreflightError`).
"""

from __future__ import annotations

import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import torch

from ..config import ConfigError
from ..data.datasets import DatasetNotFound, check_available, dataset_info
from ..grid import Run, expand, load_table, with_overrides
from ..models.backbones import model_from_config
from .cost import estimate, pretrain_images
from ..train.pretrain import build_optimizer
from ..train.step import schedule_for, train_step
from ..core.schedules import steps_per_epoch


class PreflightError(ConfigError):
    """A row of a profile would fail on the cluster; the message names the row."""


def _saved_bytes(model, step) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``step()`` runs (each
    storage counted once, the model's own weights left out): the activations a training step
    holds at its peak, which grow with the batch."""
    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def memory_estimate(model, saved_bytes: int, step_images: int, process_images: int) -> float:
    """GiB of one process at its full batch: the activations kept for backward, measured at
    ``step_images`` per view and scaled to ``process_images`` (they grow linearly with the
    batch), plus every weight and, for the student, its gradient and optimizer momentum.
    Leaves out what depends on the machine (CUDA context, cuDNN workspaces, the allocator's
    slack)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    student = sum(p.numel() * p.element_size() for p in model.student.parameters())
    return (saved_bytes * process_images / step_images + weights + 2 * student) / 2**30


def _pretrain_images(cfg) -> int | None:
    """Images of the row's pre-training split: as published (SPEC §4), or, for built-in data,
    as its builder makes them (its size is not published; building it takes a second)."""
    images = pretrain_images(cfg.data.dataset)
    info = dataset_info(cfg.data.dataset)
    if images is None and info.built_in:
        images = len(info.build(None, info.splits[0], cfg.data.image_size))
    return images


def check_row(run: Run, *, data_root: str | None = None, probe_images: int = 2) -> dict:
    """The figures of one pre-training row, after one real step; raises PreflightError.

    ``probe_images``: images per view and emulated device of that step."""
    cfg = run.config
    where = f"{run.table} --profile {run.profile}, row {run.row}"
    try:
        if data_root is not None:
            check_available(cfg.data.dataset, data_root)
        images = _pretrain_images(cfg)
        spe = steps_per_epoch(images, cfg.train.global_batch_size) if images else None
        schedule = schedule_for(cfg, spe) if spe else None
        size = cfg.data.image_size
        if size < 1:
            raise ValueError(f"data.image_size {size} is not a positive number of pixels")
        torch.manual_seed(cfg.train.seed)
        model = model_from_config(cfg).train()
        optimizer = build_optimizer(model, cfg)
        step_images = probe_images * cfg.train.devices  # every emulated device gets its images
        views = [torch.randn(step_images, 3, size, size) for _ in range(2)]
        start = time.perf_counter()
        losses = []
        saved = _saved_bytes(model, lambda: losses.append(
            train_step(model, optimizer, *views, lr=cfg.peak_lr, tau=1 - cfg.m_base, alpha=0.5)))
        seconds = time.perf_counter() - start
        loss = losses[0]
        if not torch.isfinite(loss):
            raise ValueError(f"the first step's loss is {float(loss)}")
    except (ConfigError, DatasetNotFound, ValueError, RuntimeError) as e:
        message = " ".join(str(e).split())  # one line
        raise PreflightError(f"preflight {where}: {type(e).__name__}: {message}") from None
    return {
        "row": run.row,
        "global_batch": cfg.train.global_batch_size,
        "per_process": (f"{cfg.train.world_size} x {cfg.train.devices} devices x {cfg.train.bn_batch_size}"
                        if cfg.train.devices > 1 else f"{cfg.train.world_size} x {cfg.train.bn_batch_size}"),
        "process_memory_gib": memory_estimate(model, saved, step_images, cfg.train.process_batch_size),
        "peak_lr": cfg.peak_lr,
        "m_base": cfg.m_base,
        "total_steps": schedule.total_steps if schedule else None,
        "warmup_steps": schedule.warmup_steps if schedule else None,
        "params_student": sum(p.numel() for p in model.student.parameters()),
        "step_s_here": seconds,
    }


LOOP_PROCESSES = 2
LOOP_STEPS = 3
# Per process, the loop check runs at most 32 images of 96 px (Table 1's batch) or as many pixels:
# ResNet-50 at 224 px and 32 images per process measured 67 s a step and 10.9 GiB RSS per
# process here, so 224-px rows run 4 images (their full batch was built and stepped by check_row).
LOOP_PIXELS = 32 * 96 * 96
PROBE_IMAGES = (64, 32)  # probe-train and probe-test images of the probe pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch_that_fits(image_size: int, devices: int = 1) -> int:
    """The largest power of two of images per device whose ``devices`` batches together fit in
    LOOP_PIXELS (at least 2 images, so BN has a variance; a power of two keeps a MoCo queue a
    multiple of the global batch)."""
    fits = max(2, LOOP_PIXELS // (image_size**2 * devices))
    return 1 << (fits.bit_length() - 1)


def loop_batch(cfg) -> int:
    """The per-device batch of the loop check: the row's, or, when a process's devices together
    exceed LOOP_PIXELS, the largest that fits. Every emulated device is kept: the loop runs the
    row's device split."""
    return min(cfg.train.bn_batch_size, _batch_that_fits(cfg.data.image_size, cfg.train.devices))


def loop_run(run: Run, root: str, *, steps: int = LOOP_STEPS) -> Run:
    """The row as the loop check runs it: 2 processes, ``steps`` steps, a log line every step."""
    cfg = run.config
    return with_overrides(run, {
        "data": {"root": root, "workers": min(cfg.data.workers, 1)},
        "train": {"world_size": LOOP_PROCESSES, "max_steps": steps, "bn_batch_size": loop_batch(cfg),
                  "log_every": 1, "timing_warmup": 1, "checkpoint_every": 10**9, "threads": 1},
        "probe": {"linear_epochs": 1, "eval_every": 1},
    })


def _probe_pass(model, cfg, device) -> dict:
    """The probes' own code (features, one linear-probe epoch, kNN) on a few probe images."""
    from torch.utils.data import Subset

    from ..data.datasets import build_dataset, split_for
    from ..train.probe import evaluate_on

    name, root, size = cfg.data.dataset, cfg.data.root, cfg.data.image_size
    sets = [build_dataset(name, root, split_for(name, role), size) for role in ("probe_train", "probe_test")]
    train_set, test_set = (Subset(d, range(min(n, len(d)))) for d, n in zip(sets, PROBE_IMAGES))
    result = evaluate_on(model, cfg, device, train_set, test_set)
    return {"probe_images": len(train_set) + len(test_set), "probe_top1": result["top1"]}


def _rank_main(rank: int, run: Run, run_dir: str, port: int, out_dir: str) -> None:
    """One process of the loop check (started by torch.multiprocessing with the spawn method)."""
    import torch.distributed as dist

    from ..rundir import write_json
    from ..train.pretrain import pretrain

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(run.config.train.world_size))
    summary, model = pretrain(run.config, run_dir, progress=False)
    record = {"sec_per_iter": summary["sec_per_iter"], "steps": summary["steps"], "final_loss": summary["final_loss"]}
    if rank == 0:
        record.update(_probe_pass(model, run.config, next(model.parameters()).device))
    record["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    write_json(Path(out_dir) / f"rank{rank}.json", record)
    dist.barrier()
    dist.destroy_process_group()


def _write_data(dataset: str, root: Path, images: int) -> str:
    """A generated dataset in the real on-disk format, with ``images`` pre-training images."""
    from ..data.ondisk import write_imagenet, write_stl10

    if dataset == "stl10":
        write_stl10(root, train=images // 2, unlabeled=images - images // 2, test=PROBE_IMAGES[1])
    elif dataset == "imagenet":
        write_imagenet(root, classes=2, train_per_class=images // 2, val_per_class=PROBE_IMAGES[1] // 2)
    else:  # built-in data (digits, synthetic) needs no files
        return str(root)
    return str(root)


def check_loop(run: Run, *, data_root: str | None = None, steps: int = LOOP_STEPS) -> dict:
    """The row through the real loop in 2 gloo processes, then the probe pass; raises PreflightError."""
    import torch.multiprocessing as mp

    from ..rundir import read_json

    where = f"{run.table} --profile {run.profile}, row {run.row}"
    with tempfile.TemporaryDirectory(prefix="repro-preflight-") as tmp:
        tmp = Path(tmp)
        batch = loop_batch(run.config)
        images = 2 * LOOP_PROCESSES * run.config.train.devices * batch  # two global batches
        root = data_root or _write_data(run.config.data.dataset, tmp / "data", images)
        looped = loop_run(run, root, steps=steps)
        (tmp / "run").mkdir()
        try:
            mp.start_processes(_rank_main, args=(looped, str(tmp / "run"), _free_port(), str(tmp)),
                               nprocs=LOOP_PROCESSES, start_method="spawn")
        except mp.ProcessRaisedException as e:
            last = [line for line in str(e).strip().splitlines() if line.strip()][-1]
            raise PreflightError(f"preflight {where}: the 2-process loop failed: {' '.join(last.split())}") from None
        except mp.ProcessExitedException as e:
            raise PreflightError(f"preflight {where}: a process of the 2-process loop died ({e})") from None
        ranks = [read_json(tmp / f"rank{r}.json") for r in range(LOOP_PROCESSES)]
    return {
        "loop_batch": batch,
        "loop_steps": ranks[0]["steps"],
        "loop_loss": ranks[0]["final_loss"],
        "loop_sec_per_step": max(r["sec_per_iter"] or 0.0 for r in ranks),
        "max_rss_gib": max(r["max_rss_bytes"] for r in ranks) / 2**30,
        "probe_images": ranks[0]["probe_images"],
    }


def _backbone(cfg) -> tuple[dict, str]:
    """The transfer row's starting backbone (torchvision names) and where it comes from."""
    from ..transfer.pretrained import _check_loads, _from_path, pretraining_run

    if cfg.pretrained.path is not None:
        return _from_path(cfg), f"pretrained.path {cfg.pretrained.path}"
    from ..transfer.export import backbone_state_dict

    pre = pretraining_run(cfg)
    torch.manual_seed(pre.config.train.seed)
    # The export path of a finished run (resolve_backbone), on the row's freshly built model.
    state = backbone_state_dict(model_from_config(pre.config).state_dict(), which=cfg.pretrained.which)
    source = f"the {cfg.pretrained.which} of {pre.table} --profile {pre.profile} row {pre.row}"
    return _check_loads(state, cfg, source), source


def _check_detection(cfg, backbone: dict, data_root: str | None, tmp: Path) -> dict:
    from ..transfer.datasets import dataset_sources
    from ..transfer.detectron2 import Detectron2Missing, detection_plan, detectron2_config, require_detectron2
    from ..transfer.export import save_detectron2, to_detectron2

    weights = save_detectron2(to_detectron2(backbone), tmp / "backbone_detectron2.pkl")
    plan = detection_plan(cfg)
    if data_root is not None or plan.synthetic:
        names = tuple(dataset_sources(cfg, tmp))  # checks the user's COCO / LVIS files
    else:
        names = ("repro_preflight_train", "repro_preflight_val")  # a build needs no data
    d2cfg = detectron2_config(cfg, weights, tmp / "detectron2", names)
    fig = {"detector": plan.detector, "max_iter": plan.max_iter, "steps": plan.steps, "warmup": plan.warmup,
           "base_lr": plan.base_lr, "ims_per_batch": plan.ims_per_batch, "norm": plan.norm, "built": False}
    try:
        require_detectron2()
    except Detectron2Missing:
        return fig  # the config is checked; the build needs Detectron2
    fig.update(_build_detector(d2cfg, weights), built=True)
    return fig


def _build_detector(d2cfg: dict, weights: Path) -> dict:
    """Build the detector on CPU and load the exported weights; every backbone key must match."""
    from detectron2.checkpoint import DetectionCheckpointer

    from ..transfer import d2_runtime

    if d2cfg["lazy"]:
        from detectron2.config import instantiate

        model = instantiate(d2_runtime.lazy_config(d2cfg).model)
    else:
        from detectron2.modeling import build_model

        model = build_model(d2_runtime.yacs_config(d2cfg))
    checkpointer = DetectionCheckpointer(model)
    loaded = checkpointer._load_model(checkpointer._load_file(str(weights)))
    missing = [k for k in loaded.missing_keys if "bottom_up" in k or k.startswith("backbone.res")]
    if missing or loaded.unexpected_keys or loaded.incorrect_shapes:
        problem = (missing or loaded.unexpected_keys or [k for k, *_ in loaded.incorrect_shapes])[:3]
        raise ValueError(f"the exported backbone does not load into the detector: {', '.join(problem)}")
    backbone_params = sum(p.numel() for n, p in model.named_parameters() if "bottom_up" in n)
    return {"detector_params": sum(p.numel() for p in model.parameters()), "backbone_params": backbone_params}


def _check_finetune(cfg, backbone: dict) -> dict:
    """One optimizer step of the fine-tuning classifier at the row's image size (micro-batch capped as the loop's)."""
    from ..data.datasets import num_classes
    from ..models.backbones import resnet
    from ..train.finetune import Classifier

    f, size = cfg.finetune, cfg.data.image_size
    encoder = resnet(cfg.model.arch, width=cfg.model.width, small_stem=cfg.model.small_stem)
    encoder.load_state_dict(backbone, strict=True)
    classes = num_classes(cfg.data.dataset)
    model = Classifier(encoder, classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.sgd_momentum, weight_decay=f.weight_decay)
    micro = min(f.micro_batch_size, f.batch_size, _batch_that_fits(size))
    x, y = torch.randn(micro, 3, size, size), torch.randint(classes, (micro,))
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if not torch.isfinite(loss):
        raise ValueError(f"the fine-tuning step's loss is {float(loss)}")
    return {"micro_batch": micro, "step_s_here": time.perf_counter() - start, "classes": classes}


def check_transfer_row(run: Run, *, data_root: str | None = None) -> dict:
    """A fine-tuning or detection row: its backbone, its config, its model; raises PreflightError."""
    from ..transfer.detectron2 import Detectron2Missing

    where = f"{run.table} --profile {run.profile}, row {run.row}"
    try:
        backbone, source = _backbone(run.config)
        with tempfile.TemporaryDirectory(prefix="repro-preflight-") as tmp:
            if run.config.task == "detection":
                fig = _check_detection(run.config, backbone, data_root, Path(tmp))
            else:
                fig = _check_finetune(run.config, backbone)
    except Detectron2Missing:
        raise
    except (ConfigError, DatasetNotFound, ValueError, RuntimeError, OSError, KeyError) as e:
        message = " ".join(str(e).split())
        raise PreflightError(f"preflight {where}: {type(e).__name__}: {message}") from None
    return {"row": run.row, "task": run.config.task, "backbone": source, **fig}


def _steps(total: int | None, warmup: int | None, max_steps: int | None) -> str:
    """``steps 4,680 (warm-up 156)``; a row cut by ``train.max_steps`` says so (the schedules still
    span all its epochs)."""
    if total is None:
        return "steps unknown (the dataset's size is not known before its files are read)"
    said = f"steps {total:,} (warm-up {warmup:,})"
    return said if max_steps is None or max_steps >= total else f"{max_steps:,} of a schedule's {said}"


def _describe_transfer(fig: dict) -> str:
    if fig["task"] == "finetune":
        return (f"{fig['row']}: backbone from {fig['backbone']} loads; one fine-tuning step of {fig['micro_batch']} "
                f"images ({fig['classes']} classes) {fig['step_s_here']:.2f} s here")
    built = (f"built, {fig['detector_params'] / 1e6:.1f} M parameters, backbone weights loaded"
             if fig["built"] else "not built (Detectron2 is not installed: bash .ci/detectron2/install.sh)")
    return (f"{fig['row']}: backbone from {fig['backbone']} exported; {fig['detector']} {fig['max_iter']:,} "
            f"iterations (steps {', '.join(f'{s:,}' for s in fig['steps'])}; warm-up {fig['warmup']:,}), "
            f"lr {fig['base_lr']:.4g} at {fig['ims_per_batch']} images, {fig['norm']}; detector {built}")


def preflight(table_name: str, profile: str, *, data_root: str | None = None, loop: bool = True,
              out=print) -> list[dict]:
    """Check every row of ``table_name`` at ``profile`` once (its first seed: the seeds of a row
    share its shapes and schedules); print its figures.

    ``loop``: also run each row through the 2-process loop and the probe pass (:func:`check_loop`).
    """
    table = load_table(table_name)
    first: dict[str, Run] = {}
    for run in expand(table, profile):
        first.setdefault(run.row, run)
    runs = list(first.values())
    if data_root is not None:
        runs = [with_overrides(r, {"data": {"root": data_root}}) for r in runs]
    costs = {c.run_id: c for c in estimate(table, runs)}
    rows = []
    source = f"the files under {data_root}" if data_root else "generated files in the real format"
    pretraining = any(r.config.task == "pretrain" for r in runs)
    out(f"preflight {table.name} --profile {profile}: {len(runs)} rows"
        + (f"; each pre-training row: one step here, then {LOOP_STEPS} steps of {LOOP_PROCESSES} gloo processes on "
           f"{source} and a probe pass" if loop and pretraining else ""))
    for run in runs:
        if run.config.task != "pretrain":
            fig = check_transfer_row(run, data_root=data_root)
            out(f"  {_describe_transfer(fig)}")
            rows.append(fig)
            continue
        start = time.perf_counter()
        fig = check_row(run, data_root=data_root)
        cost = costs[run.run_id]
        fig["gpu_hours"] = cost.gpu_hours
        hours = f"{cost.gpu_hours:,.1f} GPU-h" if cost.gpu_hours is not None else "cost unknown"
        out(f"  {fig['row']}: global batch {fig['global_batch']:,} ({fig['per_process']}), peak lr {fig['peak_lr']:.4g}, "
            f"m_base {fig['m_base']:.4g}, {_steps(fig['total_steps'], fig['warmup_steps'], run.config.train.max_steps)}, "
            f"student {fig['params_student'] / 1e6:.2f} M parameters, {hours}, "
            f"about {fig['process_memory_gib']:.1f} GiB per process (activations + weights, estimated)")
        if loop:
            fig.update(check_loop(run, data_root=data_root))
            capped = f" (capped from {run.config.train.bn_batch_size})" if fig["loop_batch"] < run.config.train.bn_batch_size else ""
            devices = f" devices x {fig['loop_batch']}" if run.config.train.devices > 1 else ""
            split = f"{run.config.train.devices}{devices}" if devices else f"{fig['loop_batch']}"
            out(f"    loop: {fig['loop_steps']} steps of {LOOP_PROCESSES} x {split}{capped}, "
                f"{fig['loop_sec_per_step']:.2f} s/step here, loss {fig['loop_loss']:.3f}, peak RSS "
                f"{fig['max_rss_gib']:.2f} GiB per process; probe pass on {fig['probe_images']} images OK")
        fig["check_s"] = time.perf_counter() - start
        rows.append(fig)
    out(f"preflight {table.name} --profile {profile}: OK ({len(rows)} rows checked)")
    return rows
