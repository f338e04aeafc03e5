"""Pre-training loop: one process or many (torch.distributed, env://), exact resume.

The loop owns time: the schedule is built once (``step.schedule_for``) and gives lr_k, tau_k
and alpha_k for step k, which the loop passes into the step (``step.train_step``).
Reading top to bottom: setup, data, resume, the step loop, checkpoint, final.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import PretrainConfig
from ..core import schedules
from ..core.lars import LARS, lars_param_groups
from ..core.devices import single_device
from ..core.momentum_bn import momentum_bn_layers
from ..data.augment import AUGMENTATIONS, ResumableSampler, TwoViewDataset
from ..data.batched import BATCHED_SPECS, BatchedTwoView, Indexed
from ..data.datasets import build_dataset, dataset_stats, split_for
from ..models.backbones import model_from_config
from ..rundir import RunDir
from . import checkpoint as ckpt
from .loop import MetricsLog, TrainingDiverged
from .monitor import LatestOutput
from .step import AUTOCAST_DTYPES, PARAM_DTYPES, LossWatch, schedule_for, train_step


def setup_distributed(world_size: int) -> tuple[int, torch.device]:
    """Join the process group from the env:// variables when ``world_size > 1``.

    gloo on CPU, NCCL on CUDA. Returns (rank, device).
    """
    cuda = torch.cuda.is_available()
    if world_size > 1 and not dist.is_initialized():
        got = int(os.environ.get("WORLD_SIZE", "1"))
        if got != world_size:
            raise RuntimeError(
                f"the run asks for {world_size} processes but WORLD_SIZE is {got}: launch it with "
                f"{world_size} tasks (python -m repro run ... handles this)"
            )
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, torch.device("cuda", local_rank)
    return rank, torch.device("cpu")


def set_threads(cfg: PretrainConfig) -> int:
    # SLURM does not confine CPUs here: take the allotment from SLURM_CPUS_PER_TASK.
    threads = cfg.train.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    torch.set_num_threads(threads)
    return threads


def build_optimizer(model, cfg: PretrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "lars":
        # BN and bias (1-d tensors) are excluded from the adaptation; weight decay on them
        # per optim.lars_exclude_wd (see LARS's FIDELITY notes).
        groups = lars_param_groups(model.student, o.weight_decay, lars_exclude_wd=o.lars_exclude_wd)
        return LARS(groups, lr=cfg.peak_lr, momentum=o.sgd_momentum, weight_decay=o.weight_decay, eta=o.lars_trust,
                    rule=o.lars_rule, convention=o.lars_convention)
    params = [p for p in model.student.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.peak_lr, momentum=o.sgd_momentum, weight_decay=o.weight_decay)


def _two_view_data(cfg: PretrainConfig, rank: int):
    """The pre-training data: a dataset, its sampler, and the batched augmentation (None when the
    loader makes the views image by image)."""
    mean, std = dataset_stats(cfg.data.dataset)
    d = cfg.data
    base = build_dataset(d.dataset, d.root, split_for(d.dataset, "pretrain"), d.image_size)
    options = dict(crop_scale=d.crop_scale, hflip=d.hflip, normalize_mean=mean, normalize_std=std)
    if d.augmentation_mode == "batched":
        if d.dataset == "imagenet":
            raise ValueError("data.augmentation_mode: batched needs images of one size and ImageNet's vary: "
                             "use data.augmentation_mode: per_image for dataset imagenet")
        dataset = Indexed(base)  # (uint8 image, index): the views are made on the batch, in the loop
        augment = BatchedTwoView(BATCHED_SPECS[d.augmentation](d.image_size, **options), seed=cfg.train.seed)
    else:
        dataset = TwoViewDataset(base, *AUGMENTATIONS[d.augmentation](d.image_size, **options), seed=cfg.train.seed)
        augment = None
    sampler = ResumableSampler(
        len(dataset), rank=rank, world_size=cfg.train.world_size, seed=cfg.train.seed,
        per_rank_batch_size=cfg.train.bn_batch_size, devices=cfg.train.devices,
    )
    return dataset, sampler, augment


def _epoch_loader(dataset, sampler: ResumableSampler, cfg: PretrainConfig, device, epoch: int, start_batch: int):
    """A fresh loader per epoch: workers see set_epoch (no persistent workers), and a resumed
    run skips exactly the batches this epoch already consumed."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler.set_epoch(epoch, start_batch=start_batch)
    return iter(DataLoader(
        dataset, batch_size=cfg.train.process_batch_size, sampler=sampler, drop_last=True,
        num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
    ))


def pretrain(
    cfg: PretrainConfig, run_dir: str | Path, *, stop_at_step: int | None = None, progress: bool = True
) -> tuple[dict, torch.nn.Module]:
    """Pre-train per ``cfg`` in ``run_dir`` (resuming from its last checkpoint).

    Returns the training summary (steps, seconds per iteration, final loss) and the model on
    every rank (device 0's, with emulated devices: what is probed); rank 0 also writes ``checkpoints/`` and ``metrics.jsonl``. ``stop_at_step`` ends
    the loop early after checkpointing, as a preemption would (used by the resume tests).
    """
    run_dir = Path(run_dir)
    t_start = time.time()
    set_threads(cfg)
    rank, device = setup_distributed(cfg.train.world_size)
    world = cfg.train.world_size
    dataset, sampler, augment = _two_view_data(cfg, rank)
    spe = schedules.steps_per_epoch(len(dataset), cfg.train.global_batch_size)
    schedule = schedule_for(cfg, spe)
    # max_steps 0 is the random-init control: the model as built, never stepped, probed like any run
    last_step = schedules.last_step(schedule.total_steps, cfg.train.max_steps)

    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    dtype = PARAM_DTYPES[cfg.train.precision]  # float64 for exactness checks (train.precision fp64)
    model, optimizer, wrapped, step = _model_and_optimizer(cfg, run_dir, device, dtype, memory_format, rank)
    autocast_dtype = AUTOCAST_DTYPES[cfg.train.precision]
    # fp16 needs loss scaling; bf16 has float32's range and does not.
    scaler = torch.amp.GradScaler(device.type) if cfg.train.precision == "fp16" else None

    metrics = MetricsLog(RunDir(run_dir).metrics, enabled=rank == 0)
    projection = LatestOutput(model.student.projector)  # the collapse monitor, read at log steps
    bar = _progress_bar(run_dir, last_step, step) if rank == 0 and progress else None
    # No host synchronisation inside the step: the loss stays on the device (``watch``) and is
    # read, checked and timed only at log and checkpoint steps. ``marks`` holds (step, time)
    # at those synchronised points; seconds per iteration come from their differences.
    watch = LossWatch(device)
    marks: list[tuple[int, float]] = [(step, time.perf_counter())]
    loss_value = math.nan
    loader_iter = None
    while step < last_step:
        epoch, batch_in_epoch = divmod(step, spe)
        if loader_iter is None or batch_in_epoch == 0:
            loader_iter = _epoch_loader(dataset, sampler, cfg, device, epoch, batch_in_epoch)
        view1, view2 = _views(next(loader_iter), augment, epoch, device, dtype, memory_format)
        lr, tau, alpha = schedule(step)
        loss = train_step(model, optimizer, view1, view2, lr=lr, tau=tau, alpha=alpha, forward=wrapped,
                          autocast_dtype=autocast_dtype, scaler=scaler)
        watch.observe(loss, step, lr)
        step += 1

        stopping = stop_at_step is not None and step >= stop_at_step
        logging = step % cfg.train.log_every == 0 or step == last_step
        saving = step % cfg.train.checkpoint_every == 0 or step == last_step or stopping
        if logging or saving:  # before anything is logged or saved: the latest checkpoint is still a good one
            loss_value = _checked_loss(watch, run_dir)
            marks.append((step, time.perf_counter()))  # the read synchronised with the device
        if logging:
            metrics.write({"step": step, "epoch": epoch, "loss": loss_value, "lr": lr, "tau": tau, "alpha": alpha,
                           "sec_per_iter": _sec_per_iter(marks, cfg.train.timing_warmup), "time": time.time(),
                           "projection_std": projection.std(),
                           "total_steps": last_step})  # for the live view's step of total and ETA
        if bar is not None:
            bar.update(1)
            if logging:
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if saving:
            ckpt.save(run_dir, model, optimizer, step, rank=rank, world_size=world)
        if stopping:
            break
    if last_step == 0:  # the control's untrained weights are its final checkpoint
        ckpt.save(run_dir, model, optimizer, step, rank=rank, world_size=world)
    if bar is not None:
        bar.close()
    metrics.close()
    summary = _summary(cfg, model, device, step, schedule.total_steps, spe, loss_value, marks, t_start)
    if step == marks[0][0] and step > 0:
        # Resumed at its end (stopped after its last checkpoint, e.g. while probing): this attempt
        # trained nothing, so the loss and the step time are the last ones the run logged.
        last = _last_logged(RunDir(run_dir).metrics)
        summary.update(final_loss=last.get("loss", math.nan), sec_per_iter=last.get("sec_per_iter"))
    # FIDELITY: the authors dump and evaluate rank 0's teacher; with emulated devices, device 0's
    # (its BN statistics / Momentum BN history), which is rank 0 of the equivalent one-device run.
    return summary, single_device(model, 0).float()  # fp64 runs: the probe reads float32


def _last_logged(path: Path) -> dict:
    """The last complete record of ``metrics.jsonl`` ({} when there is none)."""
    last = {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    last = json.loads(line)
                except ValueError:  # a torn last line (a kill mid-write)
                    pass
    except OSError:
        pass
    return last


def _views(batch, augment, epoch: int, device, dtype, memory_format):
    """The step's two views on the device: as the loader made them, or made here from the
    batch's images (``data.augmentation_mode: batched``, on the device)."""
    if augment is not None:
        images, indices = batch
        view1, view2 = augment(images.to(device, non_blocking=True), indices.tolist(), epoch)
    else:
        view1, view2 = batch
    return (v.to(device, dtype, non_blocking=True, memory_format=memory_format) for v in (view1, view2))


def _model_and_optimizer(cfg: PretrainConfig, run_dir: Path, device, dtype, memory_format, rank: int):
    """The model (same seed on every rank: identical initial weights), its optimizer, both resumed
    from the run's last checkpoint, and the forward to call (DDP-wrapped when distributed)."""
    torch.manual_seed(cfg.train.seed)
    model = model_from_config(cfg).to(device, dtype, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)
    step = ckpt.resume(run_dir, model, optimizer, rank=rank, world_size=cfg.train.world_size)
    if cfg.train.compile:
        model.student.compile()  # in place: parameter names (EMA pairing, checkpoints) unchanged
    wrapped = _ddp(model) if dist.is_initialized() else model
    model.train()
    return model, optimizer, wrapped, step


def _ddp(model: torch.nn.Module) -> DistributedDataParallel:
    """DDP that never syncs buffers, not even at wrap time: each rank's BN / Momentum BN
    statistics are its own and were just resumed from its own checkpoint slot.

    ``find_unused_parameters=True`` (every parameter is used) keeps DDP's gradient buckets the
    same in every step: otherwise DDP puts all gradients in one bucket for a process's first
    step and rebuilds the buckets after it, and with 3 or more processes gloo's ring all-reduce
    adds an element's values in an order that depends on its place in the bucket, so a resumed
    process would round its first step differently from the uninterrupted run (a requeued
    run of 4 processes was not bitwise equal; 2 processes are immune, a + b = b + a).

    ``broadcast_buffers=False`` is deprecated in favour of ``forward_sync_buffers=False``, which
    still broadcasts rank 0's buffers at init (torch's own warning says so) and would overwrite
    them; the warning is silenced until torch offers ``init_sync_buffers``.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        return DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)


def _checked_loss(watch: LossWatch, run_dir: Path) -> float:
    """The last loss, read once from the device; a divergence names the checkpoint that is kept."""
    try:
        return watch.read()
    except TrainingDiverged as e:
        raise TrainingDiverged(f"{e}: lower optim.lr_per_256 or check the data; the last good checkpoint "
                               f"is kept in {RunDir(run_dir).checkpoints}", step=e.step, lr=e.lr,
                               reason=str(e)) from None


def _progress_bar(run_dir: Path, last_step: int, step: int):
    from tqdm import tqdm

    return tqdm(total=last_step, initial=step, desc=run_dir.name, unit="step", mininterval=2.0, dynamic_ncols=True)


def _summary(cfg: PretrainConfig, model, device, step: int, total_steps: int, spe: int, loss_value: float,
             marks: list[tuple[int, float]], t_start: float) -> dict:
    return {
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": spe,
        "epochs_done": step / spe,
        "final_loss": loss_value,
        "sec_per_iter": _sec_per_iter(marks, cfg.train.timing_warmup),
        "train_wall_s": time.time() - t_start,
        "world_size": cfg.train.world_size,
        "devices": cfg.train.devices,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "teacher_momentum_bn_layers": sum(1 for _ in momentum_bn_layers(model.teacher)),
    }


def _sec_per_iter(marks: list[tuple[int, float]], warmup: int) -> float | None:
    """Mean seconds per step after the first ``warmup`` steps of this process.

    ``marks`` are (step, time) at synchronised points, the first where this process started:
    the span runs from the first mark at least ``warmup`` steps in (or the start, when there is
    none before the last mark) to the last mark.
    """
    if len(marks) < 2:
        return None
    s0 = marks[0][0]
    s_w, t_w = next((m for m in marks[:-1] if m[0] - s0 >= warmup), marks[0])
    s_end, t_end = marks[-1]
    return (t_end - t_w) / (s_end - s_w)
