"""MoCo v2 with a shuffling-BN or a Momentum BN teacher (paper Table 3, SPEC §1 and §4).

MoCo's names map onto the suite's (STYLE.md): the query encoder is the ``student``
(encoder + MLP head, trained), the key encoder is the ``teacher`` (an EMA copy of the
student, parameters only, ``tau`` on the old teacher, m = 0.999 in MoCo), and the keys
are the teacher's L2-normalised embeddings. A queue of the last K teacher embeddings of
ALL processes provides the negatives; the loss is InfoNCE with the positive at index 0
and temperature 0.2 (MoCo v2).

FIDELITY: MoCo v2's loss is NOT symmetrised: one term, student(view1) against
teacher(view2). (Our BYOL model sums two terms; MoCo v2 does not.)

The teacher's norm (``teacher_norm``):

* ``shuffle``: MoCo's shuffling BN. The teacher's batch is gathered from all processes,
  permuted, and each process runs the teacher (plain per-process BN in training mode) on
  its shard of the permuted batch; the outputs are gathered and the permutation undone,
  so each process gets the embeddings of its own samples but BN statistics of a random
  subset of the global batch (no intra-batch leak through BN, He et al. 2020 Sec. 3.3).
  The permutation is drawn on rank 0 and broadcast (as MoCo's reference code does), from
  a CPU generator whose state is the buffer ``shuffle_rng_state``, so a resumed run draws
  the same permutations as an uninterrupted one. With ONE process this is a shuffle
  within the batch, which changes nothing numerically (BN statistics are permutation-
  invariant): with one process ``shuffle`` is ``bn``.
* ``mbn``: every teacher BN is Momentum BN with a FIXED alpha (0.064 in Table 3, passed
  in by the loop through :meth:`MoCo.set_alpha`; the layers start at alpha 1, plain BN).
  One teacher forward per step, so the single-pass semantics of
  :mod:`repro.core.momentum_bn` apply.
  DEVIATION: the paper does not say whether MoCo's history is updated before or after
  normalising; we normalise with R_{t-1}, then commit this batch's statistics.
* ``bn``: plain per-process BN, for completeness.

The student always has plain per-process BN (MoCo v2's query encoder).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .ema import ema_update
from .heads import Branch
from .momentum_bn import convert_to_momentum_bn, set_alpha
from .norms import MOCO_TEACHER_NORMS

TEACHER_NORMS = MOCO_TEACHER_NORMS


def moco_head(in_dim: int, hidden_dim: int, out_dim: int = 128) -> nn.Sequential:
    """MoCo v2's MLP head: Linear -> ReLU -> Linear (no BN). ResNet-50: 2048 -> 2048 -> 128."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def info_nce(
    student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE (MoCo Eq. 1) averaged over the batch; inputs L2-normalised.

    student, teacher: (N, D), row i of each is the same image; queue: (K, D) negatives.
    Logits per sample are [<s_i, t_i>, <s_i, queue_1>, ..., <s_i, queue_K>] / temperature,
    and the label is 0 (the positive comes first): cross-entropy.
    """
    positive = (student * teacher).sum(dim=1, keepdim=True)
    negatives = student @ queue.t()
    logits = torch.cat([positive, negatives], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """The batches of all processes concatenated in rank order (no gradient).

    Every process must pass the same shape (same per-process batch: drop_last=True).
    """
    _, world = _rank_and_world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def shuffled_forward(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffling BN (MoCo Sec. 3.3): run ``net`` on a random shard of the global batch.

    Gathers ``x`` from all processes (global batch in rank order), draws a permutation of
    it on rank 0 (from the CPU ``generator``; only rank 0's is used) and broadcasts it;
    process r runs ``net`` on rows perm[r*B:(r+1)*B]; the outputs are gathered and put back
    in the original order. Returns (outputs for this process's own samples, outputs for
    the whole global batch in rank order). Collective: every process must call it.
    """
    rank, world = _rank_and_world()
    local_batch = x.shape[0]
    x_all = all_gather_cat(x)
    n = x_all.shape[0]
    if rank == 0:
        perm = torch.randperm(n, generator=generator).to(x.device)
    else:
        perm = torch.empty(n, dtype=torch.long, device=x.device)
    if world > 1:
        dist.broadcast(perm, src=0)
    shard = perm.view(world, local_batch)[rank]
    out_permuted = all_gather_cat(net(x_all[shard]))  # row j is the output of sample perm[j]
    out = torch.empty_like(out_permuted)
    out[perm] = out_permuted
    return out[rank * local_batch : (rank + 1) * local_batch], out


class MoCo(nn.Module):
    """MoCo v2; ``forward(view1, view2)`` returns the loss (and, in training, updates the queue).

    encoder: the backbone (e.g. a torchvision ResNet with ``fc = Identity``).
    head: the MLP head (:func:`moco_head`); its last Linear fixes the embedding size.
    teacher_norm: ``shuffle`` | ``mbn`` | ``bn`` (see the module docstring).
    queue_size: K, the number of negatives (65,536 in MoCo); must be a multiple of the
        global batch (the ring buffer advances by whole global batches).
    temperature: 0.2 (MoCo v2).
    variance: Momentum BN's variance convention (``mbn`` only), see momentum_bn.
    shuffle_seed: seeds the generator of the shuffle permutations (``shuffle`` only).

    The loop owns time: it calls :meth:`update_teacher` with tau_k and :meth:`set_alpha`
    with the (fixed) alpha; the model keeps no step counter. The queue, its pointer and
    the shuffle generator's state are buffers, so a checkpoint resumes exactly.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        *,
        teacher_norm: str = "shuffle",
        queue_size: int = 65536,
        temperature: float = 0.2,
        variance: str = "reference",
        shuffle_seed: int = 0,
    ):
        super().__init__()
        if teacher_norm not in TEACHER_NORMS:
            raise ValueError(f"teacher_norm must be one of {TEACHER_NORMS}, got {teacher_norm!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("head needs a final nn.Linear (it fixes the embedding size)")
        dim = linears[-1].out_features
        self.teacher_norm = teacher_norm
        self.temperature = temperature
        # The teacher starts as an exact copy of the student, then its BNs are swapped.
        teacher = Branch(copy.deepcopy(encoder), copy.deepcopy(head))
        if teacher_norm == "mbn":
            teacher = convert_to_momentum_bn(teacher, variance=variance)
        self.student = Branch(encoder, head)
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        # MoCo initialises the queue with random unit vectors (global RNG: the same seed on
        # every process gives the same queue).
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        if teacher_norm == "shuffle":
            self.register_buffer("shuffle_rng_state", torch.Generator().manual_seed(shuffle_seed).get_state())

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        # FIDELITY: MoCo v2 is not symmetrised: student(view1) against teacher(view2) only.
        student = F.normalize(self.student(view1), dim=1)
        teacher, teacher_all = self.teacher_embed(view2)
        # A copy: the in-place enqueue below must not change what backward uses.
        loss = info_nce(student, teacher, self.queue.clone(), self.temperature)
        if self.training:
            self.enqueue(teacher_all)
        return loss

    @torch.no_grad()
    def teacher_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised teacher embeddings: (this process's samples, all processes' in rank order).

        Collective when distributed. In training mode ``shuffle`` runs the shuffled forward
        and ``mbn`` commits its history once (single pass); eval mode is per sample.
        """
        def embed(v: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.teacher(v), dim=1)

        if self.teacher_norm == "shuffle" and self.teacher.training:
            generator = torch.Generator()
            generator.set_state(self.shuffle_rng_state.cpu())
            own, everyone = shuffled_forward(embed, x, generator)
            self.shuffle_rng_state.copy_(generator.get_state())  # advances on rank 0 only
            return own, everyone
        own = embed(x)
        return own, all_gather_cat(own)

    @torch.no_grad()
    def enqueue(self, teacher_all: torch.Tensor) -> None:
        """Overwrite the oldest rows of the ring buffer with the global batch's embeddings."""
        n, size = teacher_all.shape[0], self.queue.shape[0]
        if size % n:
            raise ValueError(f"queue_size {size} must be a multiple of the global batch {n}")
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + n] = teacher_all.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    def set_alpha(self, alpha: float) -> None:
        """Momentum BN's weight on the current batch (``mbn``; validated, else a no-op)."""
        set_alpha(self.teacher, alpha)

    @torch.no_grad()
    def update_teacher(self, tau: float) -> None:
        """theta_T <- tau * theta_T + (1 - tau) * theta_S over encoder and head (parameters only)."""
        ema_update(self.teacher, self.student, tau)
