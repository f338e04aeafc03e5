"""What the three loops (pre-training, the linear probe, fine-tuning) share, written once.

Not a ``Trainer``: the self-supervised step and fine-tuning really differ; these are the
small pieces they have in common.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..config import FinetuneConfig, PretrainConfig
from ..data.augment import eval_transform
from ..data.datasets import dataset_stats
from ..rundir import RunDir


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf (``step``: the first step whose loss was, where known)."""

    def __init__(self, message: str, *, step: int | None = None, lr: float | None = None, reason: str | None = None):
        super().__init__(message)
        self.step, self.lr = step, lr
        self.reason = reason or message  # what happened, without the advice a message may add


def check_finite(loss: float, message: str) -> None:
    """Raise :class:`TrainingDiverged` with ``message`` when ``loss`` is NaN or Inf."""
    if not math.isfinite(loss):
        raise TrainingDiverged(message)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The loop owns time: it computes the step's learning rate and sets it on every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


NOT_SCALARS = ("step", "epoch", "time", "total_steps")


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended (a resumed run continues the file)
    and flushed per line, so a killed run keeps every line it wrote. ``enabled=False`` (ranks
    other than 0) writes nothing.

    Each record's numbers also go to TensorBoard (``<run dir>/tensorboard/``, tags
    ``train/<key>`` at the record's step), for looking at; metrics.jsonl stays the record the
    suite reads.
    """

    def __init__(self, path: str | Path, *, enabled: bool = True):
        self._file = open(path, "a") if enabled else None
        self._board = tensorboard_writer(Path(path).parent) if enabled else None
        self._count = 0

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        self._count += 1
        if self._board is not None:
            add_scalars(self._board, "train", record, record.get("step", self._count))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._board is not None:
            self._board.close()
            self._board = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tensorboard_writer(run_dir: Path):
    """A ``SummaryWriter`` on ``<run_dir>/tensorboard/`` (a resumed run adds an event file)."""
    from torch.utils.tensorboard import SummaryWriter

    # in the run directory: `tensorboard --logdir runs` finds every run
    return SummaryWriter(str(RunDir(run_dir).tensorboard), flush_secs=10)


def add_scalars(writer, prefix: str, record: dict, step: int) -> None:
    """Every finite number of ``record`` as ``<prefix>/<key>`` at ``step`` (``sec_per_iter`` as
    ``sec/iter``); the step, epoch and time stamps are axes, not scalars."""
    for key, value in record.items():
        if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            writer.add_scalar(f"{prefix}/{'sec/iter' if key == 'sec_per_iter' else key}", value, step)


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: whether the label is the top-1 class, and whether it is among the top k
    (k capped at the number of classes)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return top[:, 0] == labels, (top == labels[:, None]).any(1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1, top-5) in % of one set of logits."""
    top1, top5 = topk_hits(logits, labels)
    return 100.0 * top1.float().mean().item(), 100.0 * top5.float().mean().item()


def eval_transform_for(cfg: PretrainConfig | FinetuneConfig):
    """The evaluation transform of the run's data (the probes' features, fine-tuning's test)."""
    mean, std = dataset_stats(cfg.data.dataset)
    size = cfg.data.image_size
    # FIDELITY: ImageNet is evaluated with Resize(256) + CenterCrop(224).
    return eval_transform(size, resize_to=round(size * 256 / 224) if size == 224 else None,
                          normalize_mean=mean, normalize_std=std)
