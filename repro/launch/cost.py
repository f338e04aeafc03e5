"""What a grid costs in GPU-hours, from the paper's seconds per iteration.

Asked before a paper-scale grid is submitted: the arithmetic is in :func:`gpu_hours`, a pure
function, e.g. Table 1 row 1 (Synced BN / Synced BN):
400 epochs x (105,000 // 2048 = 51 steps) = 20,400 steps x 1.1 s x 64 GPUs = 398.9 GPU-hours.

With emulated devices (``train.devices``) a process does the work of that many of the paper's
GPUs, one after another: the same GPU-hours at the paper's per-GPU speed, spread over fewer
GPUs, so each run's wall-clock time is ``devices`` times the paper's (an estimate: a GPU that
holds several devices' images runs larger kernels, often faster per image).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.schedules import last_step, steps_per_epoch, total_steps


def pretrain_images(dataset: str) -> int | None:
    """Images of ``dataset``'s pre-training split as published (SPEC §4; the dataset registry,
    ``repro.data.datasets.DATASETS``), e.g. STL10 train (5,000) + unlabeled (100,000); None for
    data that is not priced (built-in) or unknown."""
    from ..data.datasets import DATASETS  # here, not above: the data layer imports torch

    info = DATASETS.get(dataset)
    return None if info is None else info.pretrain_images


# Seconds per iteration when a table has no sec_per_iter column, per (dataset, arch), from
# the paper's Momentum² Teacher rows: Table 1 BN / Momentum BN (ResNet-18, 64 GPUs x 32) and
# Table 2 (ResNet-50, 128 GPUs x 32).
DEFAULT_SEC_PER_ITER = {("stl10", "resnet18"): 0.25, ("imagenet", "resnet50"): 0.6}


def gpu_hours(*, epochs: float, dataset_images: int, global_batch_size: int, world_size: int,
              sec_per_iter: float, max_steps: int | None = None, devices: int = 1) -> tuple[int, float]:
    """(steps, GPU-hours) of one run: steps x seconds per step x GPUs x devices per GPU / 3600.

    Steps as the training loop counts them: whole global batches per epoch (floor), rounded
    over the epochs, capped by ``max_steps``. One GPU per process, each holding ``devices`` of
    the paper's GPUs (emulated devices), at the paper's seconds per step of one GPU.
    """
    steps = last_step(total_steps(epochs, steps_per_epoch(dataset_images, global_batch_size)), max_steps)
    return steps, steps * sec_per_iter * world_size * devices / 3600


@dataclass(frozen=True)
class RunCost:
    run_id: str
    steps: int | None
    sec_per_iter: float | None
    source: str  # "paper" (the row's value), "default for <dataset>/<arch>", or why it is unknown
    world_size: int
    gpu_hours: float | None  # None: no estimate for this run
    devices: int = 1  # emulated devices per GPU: the run's wall-clock time is this many times a step

    @property
    def wall_hours(self) -> float | None:
        """Hours one run trains at the paper's per-GPU speed (its devices one after another)."""
        return None if self.gpu_hours is None else self.steps * self.sec_per_iter * self.devices / 3600


def estimate(table, runs) -> list[RunCost]:
    """The cost of each run of a grid (``repro.grid.Run``) of ``table``.

    Pre-training runs only. Runs this module cannot price (fine-tuning, detection, a dataset
    or architecture without a paper figure) get ``gpu_hours=None`` and the reason, rather
    than an error: the user still decides.
    """
    paper = {row.id: row.paper.get("sec_per_iter") for row in table.rows}
    costs = []
    for run in runs:
        cfg = run.config
        if cfg.task != "pretrain":
            costs.append(RunCost(run.run_id, None, None, f"no paper figure for {cfg.task} runs", cfg.processes, None))
            continue
        world = cfg.train.world_size
        images = pretrain_images(cfg.data.dataset)
        spi, source = paper.get(run.row), "paper"
        if spi is None:
            key = (cfg.data.dataset, cfg.model.arch)
            spi, source = DEFAULT_SEC_PER_ITER.get(key), f"default for {key[0]}/{key[1]}"
        if images is None or spi is None:
            why = (f"no image count for dataset {cfg.data.dataset!r}" if images is None
                   else f"no seconds per iteration for {cfg.data.dataset}/{cfg.model.arch}")
            costs.append(RunCost(run.run_id, None, None, why, world, None, cfg.train.devices))
            continue
        steps, hours = gpu_hours(epochs=cfg.train.epochs, dataset_images=images,
                                 global_batch_size=cfg.train.global_batch_size, world_size=world,
                                 sec_per_iter=spi, max_steps=cfg.train.max_steps, devices=cfg.train.devices)
        costs.append(RunCost(run.run_id, steps, spi, source, world, hours, cfg.train.devices))
    return costs


def describe(costs: list[RunCost]) -> str:
    """A few lines for the terminal: one per run, then the total."""
    lines = []
    for c in costs:
        if c.gpu_hours is None:
            lines.append(f"  {c.run_id:<40} {c.world_size} GPUs, cost unknown ({c.source})")
        else:
            devices = f" x {c.devices} devices" if c.devices > 1 else ""
            lines.append(f"  {c.run_id:<40} {c.steps:>9,} steps x {c.sec_per_iter:g} s x {c.world_size} GPUs{devices} "
                         f"= {c.gpu_hours:>9,.1f} GPU-h  ({c.source})")
    known = [c for c in costs if c.gpu_hours is not None]
    total = sum(c.gpu_hours for c in known)
    wall = max((c.wall_hours for c in known), default=0)
    unknown = f", and {len(costs) - len(known)} runs of unknown cost" if len(known) < len(costs) else ""
    lines.append(f"  total: {total:,.1f} GPU-hours for {len(known)} runs{unknown} "
                 f"(the longest run trains {wall:,.1f} h at the paper's speed)")
    return "\n".join(lines)
