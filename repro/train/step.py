"""One pre-training step, and the schedule that gives its lr, tau and alpha.

The loop (``pretrain.py``) and the benchmarks (``bench/``) run this same step. The loop owns
time: :func:`schedule_for` is built once per run, before the loop, and ``schedule(step)``
gives ``(lr, tau, alpha)`` for step k, which are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import PretrainConfig
from ..core import schedules
from .loop import TrainingDiverged, set_lr


@dataclass(frozen=True)
class Schedule:
    """``schedule(step) -> (lr, tau, alpha)`` over ``total_steps`` optimizer steps."""

    total_steps: int
    warmup_steps: int
    peak_lr: float
    warmup_start_lr: float
    m_base: float
    alpha_base: float
    fixed_alpha: float | None
    constant_tau: bool  # MoCo: the key encoder's momentum stays 1 - m_base (0.999)

    def __call__(self, step: int) -> tuple[float, float, float]:
        lr = schedules.lr_at(step, self.total_steps, peak_lr=self.peak_lr, warmup_steps=self.warmup_steps,
                             warmup_start_lr=self.warmup_start_lr)
        tau = 1.0 - self.m_base if self.constant_tau else schedules.tau_at(step, self.total_steps, self.m_base)
        alpha = schedules.alpha_at(step, self.total_steps, self.alpha_base, self.fixed_alpha)
        return lr, tau, alpha


def schedule_for(cfg: PretrainConfig, steps_per_epoch: int) -> Schedule:
    """The run's schedule: ``train.epochs`` of ``steps_per_epoch`` steps, warm-up in epochs."""
    return Schedule(
        total_steps=schedules.total_steps(cfg.train.epochs, steps_per_epoch),
        warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
        peak_lr=cfg.peak_lr,
        warmup_start_lr=schedules.warmup_start(cfg.peak_lr, cfg.optim.warmup_start),
        m_base=cfg.m_base,
        alpha_base=cfg.method.alpha_base,
        fixed_alpha=cfg.method.fixed_alpha,
        # MoCo keeps its key encoder's momentum constant (0.999); BYOL's follows Eq. 8.
        constant_tau=cfg.method.framework == "moco",
    )


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": None}
# The dtype of the weights, the views and the statistics (fp64: the whole step in float64).
PARAM_DTYPES = {"fp32": torch.float32, "bf16": torch.float32, "fp16": torch.float32, "fp64": torch.float64}


def train_step(model, optimizer: torch.optim.Optimizer, view1: torch.Tensor, view2: torch.Tensor, *,
               lr: float, tau: float, alpha: float, forward=None, autocast_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One optimizer step of the student-teacher ``model``; returns this rank's loss, detached.

    ``forward`` is what computes the loss (``model`` itself, or its DistributedDataParallel
    wrapper). ``autocast_dtype`` (bf16 / fp16) runs the forward passes under autocast;
    ``scaler`` scales the fp16 loss (its inf check reads the device once per step: fp16 is
    the one precision that synchronises). Nothing here reads a device value: the loss stays
    on the device, and :class:`LossWatch` checks it at log steps.
    """
    set_lr(optimizer, lr)
    # FIDELITY: the reference code applies the EMA at the start of each step, i.e. after
    # the previous optimizer step (a no-op at step 0, where teacher == student).
    model.update_teacher(tau)
    model.set_alpha(alpha)

    with torch.autocast(view1.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = (forward or model)(view1, view2)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


_NEVER = 2**62  # "no bad step yet"; exact in float64, which read() packs it into


class LossWatch:
    """Every step's loss, kept on the device; read with one host sync at log steps only.

    :meth:`observe` records the step's loss and, on the device, the first step whose loss was
    NaN or Inf. :meth:`read` (at a log or checkpoint step, on every rank at once) averages the
    last loss over the ranks and raises :class:`TrainingDiverged` naming the first bad step,
    before the loop logs or saves anything: the last good checkpoint is still the latest.
    """

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), _NEVER, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), device=device)
        self.last: torch.Tensor | None = None
        self.lrs: dict[int, float] = {}  # step -> lr since the last read, for the message

    def observe(self, loss: torch.Tensor, step: int, lr: float) -> None:
        new_bad = ~torch.isfinite(loss) & (self.first_bad == _NEVER)
        self.first_bad = torch.where(new_bad, step, self.first_bad)
        self.bad_value = torch.where(new_bad, loss.float(), self.bad_value)
        self.last = loss
        self.lrs[step] = lr

    def read(self) -> float:
        """The last loss (mean over ranks); raises TrainingDiverged if any loss was not finite."""
        first_bad, last = self.first_bad.clone(), self.last.detach().double().clone()
        if dist.is_initialized():  # every rank sees a divergence and stops together
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
            dist.all_reduce(last)
            last /= dist.get_world_size()
        bad, value, mine = torch.stack([first_bad.double(), last, self.bad_value.double()]).tolist()
        if bad != _NEVER:
            bad = int(bad)
            shown = mine if int(self.first_bad) == bad else "not finite on another rank"
            lr = self.lrs.get(bad)
            raise TrainingDiverged(f"loss is {shown} at step {bad}" + (f" (lr {lr:.4g})" if lr is not None else ""),
                                   step=bad, lr=lr)
        self.lrs.clear()
        return value
