"""Exponential moving average of the teacher from the student (Section 3.4, Eq. 7).

theta_T <- tau * theta_T + (1 - tau) * theta_S, with tau passed in by the loop.
FIDELITY: Eq. 7 drops the factor on the student term; that is a typo.
"""

from __future__ import annotations

import torch
from torch import nn


def _paired(teacher_items, student_items, what: str):
    t, s = dict(teacher_items), dict(student_items)
    if t.keys() != s.keys():
        missing = sorted(set(t) ^ set(s))[:5]
        raise ValueError(f"teacher and student {what} differ, e.g. {missing}")
    return [t[k] for k in t], [s[k] for k in t]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, tau: float, *, buffers: bool = False) -> None:
    """Move every teacher parameter towards the student's: t <- tau * t + (1 - tau) * s.

    Parameters only by default: buffers (BN statistics) are the teacher's own. With
    ``buffers=True`` the floating-point buffers follow the same EMA and integer buffers
    (``num_batches_tracked``) are copied: EMAN's teacher (SPEC §5).
    """
    t_params, s_params = _paired(teacher.named_parameters(), student.named_parameters(), "parameters")
    # lerp with weight 0 returns t exactly and with weight 1 returns s exactly.
    torch._foreach_lerp_(t_params, s_params, 1.0 - tau)
    if buffers:
        t_bufs, s_bufs = _paired(teacher.named_buffers(), student.named_buffers(), "buffers")
        for t, s in zip(t_bufs, s_bufs):
            if t.is_floating_point():
                t.lerp_(s, 1.0 - tau)
            else:
                t.copy_(s)

