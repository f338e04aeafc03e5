"""One pre-training step, and the schedule that gives its lr, tau and alpha.

The loop (``pretrain.py``) and the benchmarks (``bench/``) run this same step. The loop owns
time: :func:`schedule_for` is built once per run, before the loop, and ``schedule(step)``
gives ``(lr, tau, alpha)`` for step k, which are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..core import schedules
from .loop import TrainingDiverged, check_finite, set_lr


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


def schedule_for(cfg: RunConfig, steps_per_epoch: int) -> Schedule:
    """The run's schedule: ``train.epochs`` of ``steps_per_epoch`` steps, warm-up in epochs."""
    return Schedule(
        total_steps=max(1, round(cfg.train.epochs * steps_per_epoch)),
        warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
        peak_lr=cfg.peak_lr,
        warmup_start_lr=schedules.warmup_start(cfg.peak_lr, cfg.optim.warmup_start),
        m_base=cfg.m_base,
        alpha_base=cfg.method.alpha_base,
        fixed_alpha=cfg.method.fixed_alpha,
        # MoCo keeps its key encoder's momentum constant (0.999); BYOL's follows Eq. 8.
        constant_tau=cfg.method.framework == "moco",
    )


def _all_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def train_step(model, optimizer: torch.optim.Optimizer, view1: torch.Tensor, view2: torch.Tensor, *,
               lr: float, tau: float, alpha: float, step: int = 0, forward=None) -> float:
    """One optimizer step of the student-teacher ``model``; returns the loss (mean over ranks).

    ``forward`` is what computes the loss (``model`` itself, or its DistributedDataParallel
    wrapper). Raises :class:`TrainingDiverged` before the update when the loss is NaN or Inf,
    on every rank at once.
    """
    set_lr(optimizer, lr)
    # FIDELITY: the reference code applies the EMA at the start of each step, i.e. after
    # the previous optimizer step (a no-op at step 0, where teacher == student).
    model.update_teacher(tau)
    model.set_alpha(alpha)

    loss = (forward or model)(view1, view2)
    loss_value = _all_mean(loss).item()  # every rank sees a divergence and stops together
    check_finite(loss_value, f"loss is {loss_value} at step {step} (lr {lr:.4g})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss_value
