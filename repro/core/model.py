"""The student-teacher model: BYOL with a Momentum BN teacher (Sections 3.3-3.4).

student = encoder f + projector g + predictor q; teacher = f + g, an exact copy at start,
then an EMA of the student (parameters only). Each view gets its own student forward
(own BN batch statistics); the teacher never back-propagates.

Norms (SPEC §1, §5): the student's BNs are ``bn`` (per process) or ``syncbn``; the
teacher's are ``bn``, ``syncbn``, ``mbn`` (Momentum BN: every BN of the teacher,
projector included) or ``eman`` (plain BN in eval mode whose statistics are an EMA of the
student's, Cai et al. 2021).

Emulated devices (``devices`` > 1, :mod:`.devices`): every norm but Synced BN keeps one set of
statistics per device and normalises each device's images alone, as on that many GPUs; Synced
BN's statistics are over every device's images.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .devices import convert_to_device_bn
from .ema import ema_update
from .heads import Branch
from .momentum_bn import convert_to_momentum_bn, deferred_update, set_alpha
from .norms import STUDENT_NORMS, TEACHER_NORMS
from .sync_bn import convert_to_sync_bn


# Head sizes (SPEC §2): (projector hidden, projection dim); predictor hidden = projector hidden.
# FIDELITY: ResNet-50 2048 -> 4096 -> 256 (reference code); ResNet-18 512 -> 512 -> 128
# (paper, STL10). DEVIATION: the ResNet-18 predictor (128 -> 512 -> 128) is not stated.
HEAD_SIZES = {"resnet18": (512, 128), "resnet50": (4096, 256)}


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample 2 - 2 cos(prediction, target) on L2-normalised vectors."""
    return 2 - 2 * (F.normalize(prediction, dim=1) * F.normalize(target, dim=1)).sum(dim=1)


def symmetrised_loss(p1, p2, k1, k2) -> torch.Tensor:
    """4 - 2(<q(v1), k(v2)> + <q(v2), k(v1)>) per sample, averaged over the batch.

    The two terms are SUMMED: averaging them halves the gradient (SPEC §6).
    """
    return (regression_loss(p1, k2.detach()) + regression_loss(p2, k1.detach())).mean()


class StudentTeacher(nn.Module):
    """BYOL student-teacher pair; ``forward(view1, view2)`` returns the loss.

    The loop owns time: it calls :meth:`set_alpha` and :meth:`update_teacher` with the
    scheduled alpha_k and tau_k; the model keeps no step counter.
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        predictor: nn.Module,
        *,
        student_norm: str = "bn",
        teacher_norm: str = "mbn",
        variance: str = "reference",
        devices: int = 1,
    ):
        super().__init__()
        if student_norm not in STUDENT_NORMS:
            raise ValueError(f"student_norm must be one of {STUDENT_NORMS}, got {student_norm!r}")
        if teacher_norm not in TEACHER_NORMS:
            raise ValueError(f"teacher_norm must be one of {TEACHER_NORMS}, got {teacher_norm!r}")
        self.student_norm, self.teacher_norm, self.devices = student_norm, teacher_norm, devices
        # The teacher starts as an exact copy of the student (plain BN on both), then each
        # side's BNs are swapped; the swaps copy parameters and statistics.
        teacher = Branch(copy.deepcopy(encoder), copy.deepcopy(projector))
        student = Branch(encoder, projector, predictor)
        if student_norm == "syncbn":
            student = convert_to_sync_bn(student)
        else:
            student = convert_to_device_bn(student, devices)
        if teacher_norm == "syncbn":
            teacher = convert_to_sync_bn(teacher)
        elif teacher_norm == "mbn":
            teacher = convert_to_momentum_bn(teacher, variance=variance, devices=devices)
        elif teacher_norm == "bn" or student_norm == "bn":
            # EMAN's eval-mode statistics follow the student's: per device when the student's are.
            teacher = convert_to_device_bn(teacher, devices)
        self.student, self.teacher = student, teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "StudentTeacher":
        super().train(mode)
        if self.teacher_norm == "eman":
            self.teacher.eval()  # EMAN: the teacher normalises with its EMA statistics
        return self

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        p1, p2 = self.student(view1), self.student(view2)
        k1, k2 = self.teacher_forward(view1, view2)
        return symmetrised_loss(p1, p2, k1, k2)

    @torch.no_grad()
    def teacher_forward(self, view1: torch.Tensor, view2: torch.Tensor):
        if self.teacher_norm == "mbn" and self.teacher.training:
            # Lazy update (Eq. 5-6): both views see R_{t-1}; the history is committed once.
            with deferred_update(self.teacher):
                return self.teacher(view1), self.teacher(view2)
        return self.teacher(view1), self.teacher(view2)

    def set_alpha(self, alpha: float) -> None:
        set_alpha(self.teacher, alpha)

    @torch.no_grad()
    def update_teacher(self, tau: float) -> None:
        """theta_T <- tau * theta_T + (1 - tau) * theta_S over encoder and projector."""
        for name in ("encoder", "projector"):
            ema_update(
                getattr(self.teacher, name),
                getattr(self.student, name),
                tau,
                buffers=self.teacher_norm == "eman",
            )

