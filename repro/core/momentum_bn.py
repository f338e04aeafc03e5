"""Momentum BN with the lazy two-view update (paper Section 3.2, Eq. 3, 5, 6).

Notation (SPEC §1): ``alpha`` is the weight on the CURRENT batch's statistics.
FIDELITY: this follows the reference code and the paper's Section 4.4 / Table 6
(fixed alpha = 1 equals plain BN); the paper's Eq. 3/5/6 put alpha on the history,
which contradicts its own Table 6.

For a training-mode forward of a batch x, per channel::

    mean~ = alpha * mean_B + (1 - alpha) * running_mean
    var~  = alpha * var_B  + (1 - alpha) * running_var
    y     = weight * (x - mean~) / sqrt(var~ + eps) + bias

``running_mean`` / ``running_var`` are the history R (start at 0 and 1). When they are
committed depends on the context:

* inside :func:`deferred_update` (the lazy update, Eq. 5-6): every forward uses the
  history from before the block, its batch statistics are parked in ``pending_*``
  buffers, and on exit the history is committed once with the mean of the parked
  statistics. A view's statistics never reach the other view of the same step.
* outside it (the single-pass case, e.g. the MoCo key encoder): normalise with the old
  history, then commit this batch's statistics at once.
  DEVIATION: the paper does not say whether MoCo's history is updated before or after
  normalising; we normalise with R_{t-1} and then commit.

Under autocast (bf16 / fp16) the batch statistics, the history and the parked statistics
stay in float32; only the normalised output takes the activation's dtype.

Emulated devices (``devices`` > 1, :mod:`repro.core.devices`): the layer keeps one history per
device, as the reference code keeps one per GPU (SPEC §1), and normalises each device's images
(device-minor batch order) with that device's batch statistics and history.

Eval mode normalises with the history and never changes a buffer. Everything needed to
resume exactly (history, alpha, pending statistics) is a buffer, so it lives in the
state dict; the layer keeps no counters of its own (the loop passes alpha in with
:func:`set_alpha`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .devices import as_devices, repeated, slice_state

VARIANCES = ("reference", "biased")


def normalize(x, mean, var, weight, bias, eps: float) -> torch.Tensor:
    """weight * (x - mean) / sqrt(var + eps) + bias, per channel (dim 1).

    ``F.batch_norm`` is the fast path but takes no gradient through given statistics;
    statistics that need one (synced or differentiable batch statistics) go the long way.
    """
    if not (mean.requires_grad or var.requires_grad):
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = weight * torch.rsqrt(var + eps)
    return (x - mean.view(shape)) * scale.view(shape) + bias.view(shape)


class _MomentumBatchNorm(nn.Module):
    _expected_dims: tuple[int, ...] = ()
    per_device = ("running_mean", "running_var", "pending_mean", "pending_var")  # one slice per device

    def __init__(self, num_features: int, eps: float = 1e-5, variance: str = "reference", devices: int = 1):
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.num_features = num_features
        self.devices = devices
        self.eps = eps
        # FIDELITY: "reference" is the authors' code: torch.var (unbiased) times n/(n-1)
        # once more, i.e. biased_var * (n/(n-1))**2, for normalising and for the history.
        # "biased" is the paper's Eq. 1.
        self.variance = variance
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # Per device (flat, device k at [k * C, (k + 1) * C)): history and parked statistics.
        self.register_buffer("running_mean", torch.zeros(devices * num_features))
        self.register_buffer("running_var", torch.ones(devices * num_features))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.register_buffer("pending_mean", torch.zeros(devices * num_features))
        self.register_buffer("pending_var", torch.zeros(devices * num_features))
        self.register_buffer("pending_count", torch.tensor(0, dtype=torch.long))
        self.deferring = False  # set only by deferred_update(); a plain flag, not state
        # pending_count mirrored on the host, so the step never reads a device tensor
        # (int(buffer) would synchronise with the GPU once per layer per step). The buffer
        # stays the state (a checkpoint restores it, and this mirror from it).
        self.pending_views = 0

    def extra_repr(self) -> str:
        devices = f", devices={self.devices}" if self.devices > 1 else ""
        return f"{self.num_features}, eps={self.eps}, variance={self.variance!r}{devices}"

    def batch_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and variance of ``x`` under this layer's variance convention
        (``x`` already in the per-device layout of :func:`devices.as_devices`)."""
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(
                f"Momentum BN needs more than 1 value per channel in training mode, "
                f"got input of shape {tuple(x.shape)}"
            )
        # biased -> convention: the paper's Eq. 1 keeps it; the reference code's
        # torch.var (unbiased) times n/(n-1) again makes it biased * (n/(n-1))**2.
        scale = (n / (n - 1)) ** 2 if self.variance == "reference" else 1.0
        low_precision = x.dtype != self.running_mean.dtype  # bf16 / fp16 activations under autocast
        if x.requires_grad:
            # Differentiable path, for use outside a no-grad teacher.
            var, mean = torch.var_mean(x.to(self.running_mean.dtype) if low_precision else x,
                                       dim=[0] + list(range(2, x.dim())), correction=0)
            return mean, var * scale
        # The statistics half of a training-mode batch_norm (mean and biased variance, no
        # output written): on CPU several times cheaper than torch.var_mean, and cheaper than
        # a whole batch_norm whose output is discarded (bench/bench_momentum_bn.py).
        if low_precision:
            # Given float32 running buffers (scratch, discarded), the kernel accumulates and
            # returns float32 statistics of the low-precision input, without a float32 copy of it.
            scratch = torch.zeros(2, x.shape[1], dtype=self.running_mean.dtype, device=x.device)
            mean, var = torch.batch_norm_update_stats(x, scratch[0], scratch[1], 1.0)
        else:
            mean, var = torch.batch_norm_update_stats(x, None, None, 1.0)
        return mean, var * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self._expected_dims:
            raise ValueError(
                f"{type(self).__name__} expects a {' or '.join(map(str, self._expected_dims))}-d "
                f"input, got shape {tuple(x.shape)}"
            )
        shape, x = x.shape, as_devices(x, self.devices)
        weight, bias = repeated(self.weight, self.devices), repeated(self.bias, self.devices)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, False, 0.0, self.eps).reshape(shape)
        mean_b, var_b = self.batch_stats(x)
        # alpha * stat_B + (1 - alpha) * R in one op each (in the history's dtype, which
        # differs from x's under autocast).
        dtype = self.running_mean.dtype
        mean = torch.lerp(self.running_mean, mean_b.to(dtype), self.alpha)
        var = torch.lerp(self.running_var, var_b.to(dtype), self.alpha)
        out = normalize(x, mean, var, weight, bias, self.eps).reshape(shape)
        with torch.no_grad():
            if self.deferring:
                self.pending_mean.add_(mean_b.detach())
                self.pending_var.add_(var_b.detach())
                self.pending_count.add_(1)
                self.pending_views += 1
            else:
                self._commit(mean_b.detach(), var_b.detach())
        return out

    @torch.no_grad()
    def _commit(self, mean_b: torch.Tensor, var_b: torch.Tensor) -> None:
        # R <- alpha * stat + (1 - alpha) * R   (Eq. 6 with alpha on the current batch)
        alpha = self.alpha.to(self.running_mean.dtype)
        self.running_mean.lerp_(mean_b.to(self.running_mean.dtype), alpha)
        self.running_var.lerp_(var_b.to(self.running_var.dtype), alpha)

    @torch.no_grad()
    def commit_pending(self) -> None:
        """Commit the mean of the parked per-view statistics once, then clear them (Eq. 6).

        FIDELITY: Eq. 6's variance term has a comma typo; like the reference code we take
        the plain average of the per-view variances.
        """
        count = self.pending_views  # the host's mirror of pending_count: no device read
        if count:
            self._commit(self.pending_mean / count, self.pending_var / count)
        self.clear_pending()

    @torch.no_grad()
    def clear_pending(self) -> None:
        self.pending_mean.zero_()
        self.pending_var.zero_()
        self.pending_count.zero_()
        self.pending_views = 0

    def plain(self, k: int) -> "_MomentumBatchNorm":
        """Device ``k``'s layer alone (one device), with its history and parked statistics."""
        new = type(self)(self.num_features, eps=self.eps, variance=self.variance)
        new.load_state_dict(slice_state(self, k, self.state_dict()))
        return new.to(self.weight.device, self.weight.dtype).train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "pending_count"
        if key in state_dict:  # a device read once per load, not per step
            self.pending_views = int(state_dict[key])


class MomentumBatchNorm1d(_MomentumBatchNorm):
    """Momentum BN over (N, C) or (N, C, L) inputs: statistics over N (and L)."""

    _expected_dims = (2, 3)


class MomentumBatchNorm2d(_MomentumBatchNorm):
    """Momentum BN over (N, C, H, W) inputs: statistics over N, H, W."""

    _expected_dims = (4,)


def momentum_bn_layers(module: nn.Module) -> Iterator[_MomentumBatchNorm]:
    return (m for m in module.modules() if isinstance(m, _MomentumBatchNorm))


@torch.no_grad()
def set_alpha(module: nn.Module, alpha: float) -> None:
    """Set alpha (the weight on the current batch) in every Momentum BN layer of ``module``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    for layer in momentum_bn_layers(module):
        layer.alpha.fill_(alpha)


@contextlib.contextmanager
def deferred_update(module: nn.Module) -> Iterator[None]:
    """The lazy update (Eq. 5-6): all forwards in the block see the history from before it.

    On a normal exit the history of every Momentum BN layer is committed once with the
    mean of the block's batch statistics. If the block raises, the parked statistics are
    dropped and the history is left as it was.
    """
    layers = list(momentum_bn_layers(module))
    for layer in layers:
        if layer.deferring:
            raise RuntimeError("deferred_update() blocks cannot be nested")
        if layer.pending_views:
            raise RuntimeError("Momentum BN has uncommitted statistics from an earlier block")
        layer.deferring = True
    ok = False
    try:
        yield
        ok = True
    finally:
        for layer in layers:
            layer.deferring = False
            if ok:
                layer.commit_pending()
            else:
                layer.clear_pending()


_BN_TYPES = {
    nn.BatchNorm1d: MomentumBatchNorm1d,
    nn.BatchNorm2d: MomentumBatchNorm2d,
}


def convert_to_momentum_bn(module: nn.Module, variance: str = "reference", devices: int = 1) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by Momentum BN (SPEC §1: every BN of the teacher).

    Parameters and running statistics are copied (the running statistics become the
    history, of every device when ``devices`` > 1). Returns the converted module; the input module is converted in place where
    possible, like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``.
    """
    new = _convert_one(module, variance, devices)
    if new is not module:
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_to_momentum_bn(child, variance, devices))
    return module


def _convert_one(module: nn.Module, variance: str, devices: int) -> nn.Module:
    # Exact types only: SyncBatchNorm subclasses _BatchNorm but not BatchNorm1d/2d.
    cls = _BN_TYPES.get(type(module))
    if cls is None:
        return module
    if not module.affine or not module.track_running_stats:
        raise ValueError(f"cannot convert {module}: needs affine=True and track_running_stats=True")
    new = cls(module.num_features, eps=module.eps, variance=variance, devices=devices)
    with torch.no_grad():
        new.weight.copy_(module.weight)
        new.bias.copy_(module.bias)
        new.running_mean.copy_(repeated(module.running_mean, devices))
        new.running_var.copy_(repeated(module.running_var, devices))
    new.weight.requires_grad_(module.weight.requires_grad)
    new.bias.requires_grad_(module.bias.requires_grad)
    new.to(module.weight.device, module.weight.dtype)
    new.train(module.training)
    return new
