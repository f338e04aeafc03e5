"""LARS for the 4096-batch ImageNet runs (SPEC §4; You, Gitman, Ginsburg 2017).

SGD with momentum and a layer-wise trust ratio ``eta * ||p|| / ||update||``. Parameters
are either ADAPTED (conv and linear weights) or EXCLUDED from the adaptation (BN weights
and biases, every bias: the 1-d tensors), per param group (``lars_adapt``).

Two update rules, chosen with ``convention`` (both pinned by tests):

``"reference"`` (default): the authors' ``LARS_SGD`` (momentum2-teacher,
momentum_teacher/layers/optimizer.py), which produced the paper's ImageNet numbers::

    d     = g + wd * p
    trust = eta * ||p|| / (||g|| + wd * ||p|| + 1e-8)    (adapted; excluded: 1)
    v     = m * v + lr * trust * d                        (lr INSIDE the momentum buffer)
    p     = p - v

FIDELITY: that trust ratio is the authors' FIRST commit (zengarden/momentum2-teacher
e17a948), ``rule="e17a948"`` (default). Their released HEAD changes only the trust ratio,
``rule="head"``::

    trust = eta * ||p|| / (||g|| + wd * ||p||)  if ||p|| * ||g|| > 1e-8 else 1

Under e17a948 an adapted tensor with ||p|| = 0 never moves (trust 0); under HEAD it takes
a plain momentum-SGD step (trust 1), as does one whose gradient is zero.

``"byol"``: DeepMind BYOL's LARS (optax chain: add weight decay, LARS scaling, momentum
trace, scale by the learning rate)::

    d     = g + wd * p
    trust = eta * ||p|| / ||d||  if ||p|| > 0 and ||d|| > 0 else 1   (adapted; excluded: 1)
    v     = m * v + trust * d
    p     = p - lr * v                                    (lr OUTSIDE the momentum buffer)

FIDELITY: the two agree for a constant learning rate up to the trust-ratio denominator
(||g|| + wd||p|| vs ||g + wd p||, the same to first order for wd = 1e-6); they differ
while the learning rate changes (warm-up, cosine), where the reference rule applies each
step's lr to that step's gradient only, and for an adapted tensor with ||p|| = 0, which
never moves under the reference rule (trust 0) but takes a plain SGD step under BYOL's
(trust 1) (the same holds for HEAD's reference rule, above). No such tensor exists in the suite's models (zero-initialised tensors are all
biases or BN parameters, which are excluded).

The optimizer is config-free: weight decay and the adaptation flag come per param group;
:func:`lars_param_groups` builds the groups from a model. The optimizer keeps no step
counter: the loop sets ``group["lr"]`` every step.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

CONVENTIONS = ("reference", "byol")
RULES = ("e17a948", "head")  # commits of zengarden/momentum2-teacher (see the module docstring)
_REFERENCE_EPS = 1e-8  # e17a948: the guard in the trust-ratio denominator; HEAD: the threshold on ||p||*||g||


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (see the module docstring).

    params: parameters or param groups; a group may set ``lars_adapt`` (default True),
        ``weight_decay``, ``lr``, ``momentum``, ``eta`` (:func:`lars_param_groups` gives the
        excluded group no weight decay where the paper's reading is asked for).
    lr: learning rate (the loop overwrites ``group["lr"]`` each step).
    momentum: SGD's momentum (0.9 in every ImageNet run).
    weight_decay: L2 coefficient added to the gradient (SPEC §4: 1e-6 reference code,
        1.5e-6 paper).
    eta: trust coefficient (0.001).
    convention: ``"reference"`` (the authors' code, default) or ``"byol"``.
    rule: the reference convention's trust ratio: ``"e17a948"`` (the authors' first
        commit, default) or ``"head"`` (their released HEAD); see the module docstring.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        *,
        convention: str = "reference",
        rule: str = "e17a948",
    ):
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0.0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_adapt=True,
            convention=convention, rule=rule,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["convention"] not in CONVENTIONS:
                raise ValueError(f"convention must be one of {CONVENTIONS}, got {group['convention']!r}")
            adapt = group["lars_adapt"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue  # no gradient this step: no decay, no momentum (torch's SGD does the same)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._update(p, p.grad, state["momentum_buffer"], group, wd, adapt)
        return loss

    @staticmethod
    def _update(p, g, buf, group, wd: float, adapt: bool) -> None:
        lr, momentum, eta = group["lr"], group["momentum"], group["eta"]
        d = g.add(p, alpha=wd) if wd else g.clone()
        if group["convention"] == "reference":
            if adapt:
                p_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(g)  # FIDELITY: the norm of g without wd, plus wd * ||p||
                if group.get("rule", "e17a948") == "head":  # FIDELITY: the authors' released HEAD
                    trust = torch.where(p_norm * g_norm > _REFERENCE_EPS,
                                        eta * p_norm / (g_norm + wd * p_norm), torch.ones_like(p_norm))
                else:  # FIDELITY: the authors' first commit, e17a948
                    trust = eta * p_norm / (g_norm + wd * p_norm + _REFERENCE_EPS)
                d.mul_(trust)
            buf.mul_(momentum).add_(d, alpha=lr)  # FIDELITY: lr inside the momentum buffer
            p.sub_(buf)
        else:
            if adapt:
                p_norm = torch.linalg.vector_norm(p)
                d_norm = torch.linalg.vector_norm(d)
                trust = torch.where(
                    (p_norm > 0) & (d_norm > 0), eta * p_norm / d_norm, torch.ones_like(p_norm)
                )
                d.mul_(trust)
            buf.mul_(momentum).add_(d)
            p.add_(buf, alpha=-lr)


def lars_param_groups(
    model_or_named_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    lars_exclude_wd: bool,
) -> list[dict]:
    """Param groups for :class:`LARS`: adapted (>= 2-d) and excluded (<= 1-d) tensors.

    The 1-d tensors are exactly the BN weights and biases and every Linear/Conv bias of the
    suite's models (torchvision ResNets have bias-free convs), which is the reference
    code's split by module type (Conv2d and Linear weights adapted; BN parameters and Linear
    biases excluded). Parameters with ``requires_grad=False`` (the teacher) are left out.

    lars_exclude_wd: FIDELITY: False = the reference code (weight decay also on the
        excluded tensors); True = the paper (no weight decay on BN parameters and biases).
        The config's ``optim.lars_exclude_wd``, under the same name.
    Empty groups are dropped.
    """
    named = (
        model_or_named_params.named_parameters()
        if isinstance(model_or_named_params, nn.Module)
        else model_or_named_params
    )
    adapted, excluded = [], []
    for _, p in named:
        if p.requires_grad:
            (adapted if p.dim() >= 2 else excluded).append(p)
    groups = [
        {"params": adapted, "lars_adapt": True, "weight_decay": weight_decay},
        {"params": excluded, "lars_adapt": False, "weight_decay": 0.0 if lars_exclude_wd else weight_decay},
    ]
    return [g for g in groups if g["params"]]
