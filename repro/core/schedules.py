"""Schedules as pure functions of the optimizer step (the loop owns time).

k is the optimizer step (0-based), K the total number of steps.
"""

from __future__ import annotations

import math


def cosine_ramp(step: int, total_steps: int) -> float:
    """(cos(pi*k/K) + 1) / 2: 1 at k = 0, 0 at k = K."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0


def tau_at(step: int, total_steps: int, m_base: float) -> float:
    """EMA weight on the old teacher (Section 3.4, Eq. 7): tau_k = 1 - m_base * ramp(k).

    FIDELITY: m_base = 1 - tau_base; the reference code's tau_base 0.99 is m_base 0.01.
    """
    return 1.0 - m_base * cosine_ramp(step, total_steps)


def alpha_at(step: int, total_steps: int, alpha_base: float, fixed: float | None = None) -> float:
    """Momentum BN weight on the current batch (Eq. 8): alpha_base * ramp(k), or ``fixed``."""
    if fixed is not None:
        return fixed
    return alpha_base * cosine_ramp(step, total_steps)


def lr_at(
    step: int, total_steps: int, *, peak_lr: float, warmup_steps: int, warmup_start_lr: float
) -> float:
    """Linear warm-up from ``warmup_start_lr`` to ``peak_lr``, then cosine decay to 0.

    FIDELITY: the reference code warms up from an absolute 1e-6; the paper (STL10) from
    0.001 x peak: see :func:`warmup_start`.
    """
    if step < warmup_steps:
        return warmup_start_lr + (peak_lr - warmup_start_lr) * step / warmup_steps
    return peak_lr * cosine_ramp(step - warmup_steps, max(total_steps - warmup_steps, 1))


def warmup_start(peak_lr: float, mode: str) -> float:
    """Start of the warm-up: ``"reference"`` (absolute 1e-6) or ``"paper"`` (0.001 x peak)."""
    if mode == "reference":
        return 1e-6
    if mode == "paper":
        return 1e-3 * peak_lr
    raise ValueError(f"warm-up mode must be 'reference' or 'paper', got {mode!r}")


def scaled_lr(lr_per_256: float, global_batch_size: int) -> float:
    """Linear scaling rule: lr = base * B / 256."""
    return lr_per_256 * global_batch_size / 256


def equivalent_hparams(
    lr_per_256: float, m_base: float, global_batch_size: int, m_base_batch: int | None
) -> tuple[float, float]:
    """Peak lr and m_base at ``global_batch_size`` (Section 4.2's equivalence rule).

    "When the mini-batch size is multiplied by k, multiply the learning rates by k and
    multiply m_base by k": the lr by the linear scaling rule from 256 (:func:`scaled_lr`),
    m_base by k = global_batch_size / m_base_batch (``m_base_batch`` None: m_base as given,
    the reference code, which never applies the rule).
    FIDELITY: the paper states the rule for Table 4 / Figure 3 only.
    The arithmetic is ``m_base * B / B0`` in this order (not ``m_base * (B / B0)``, which can
    differ in the last bit): it is what every published run id was computed with.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global batch must be positive, got {global_batch_size}")
    lr = scaled_lr(lr_per_256, global_batch_size)
    if m_base_batch is None:
        return lr, m_base
    if m_base_batch <= 0:
        raise ValueError(f"m_base_batch must be positive, got {m_base_batch}")
    return lr, m_base * global_batch_size / m_base_batch


def steps_per_epoch(dataset_len: int, global_batch_size: int) -> int:
    """Optimizer steps in one epoch: full global batches only (drop_last), floor division.

    E.g. STL10 train+unlabeled: 105,000 // 2048 = 51 steps (SPEC §4). Raises when not even one
    batch fits, which would silently make a run of zero steps. A caller whose batch is capped by
    a small set (the probes, fine-tuning on 1%) passes ``min(batch, dataset_len)``.
    """
    if global_batch_size <= 0:
        raise ValueError(f"batch must be positive, got {global_batch_size}")
    steps = dataset_len // global_batch_size
    if steps == 0:
        raise ValueError(f"dataset of {dataset_len} images has no full batch of "
                         f"{global_batch_size}")
    return steps


def total_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: ``epochs`` (possibly fractional) x steps per epoch, rounded, at
    least 1. E.g. Table 1 at paper scale: 400 epochs x 51 = 20,400 steps."""
    return max(1, round(epochs * steps_per_epoch))


def last_step(total_steps: int, max_steps: int | None) -> int:
    """The step a run stops at: ``total_steps``, or ``max_steps`` when that is fewer (smoke
    profiles; 0 for the random-init control). The schedules still span ``total_steps``."""
    return total_steps if max_steps is None else min(total_steps, max_steps)
