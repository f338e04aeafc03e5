"""Many devices in one process: each emulated device's BN sees only its own images.

The paper's BN rows normalise over the 32 images of one GPU out of 64 (Table 1), and the
reference code keeps one Momentum BN history per GPU (SPEC §1). A process that holds ``G``
emulated devices reproduces those statistics exactly: every BN layer normalises each device's
images with that device's statistics, and keeps that device's running statistics (or Momentum
BN history) apart from the others'. Synced BN is unchanged: its statistics are over every image
of every device of every process.

Batch layout (why it is free). A process batch of ``G * n`` images holds device ``k``'s images at
positions ``k, k + G, k + 2G, ...`` (device-minor order). Then the contiguous ``(G * n, C, ...)``
activation IS the ``(n, G * C, ...)`` tensor whose channel ``k * C + c`` is channel ``c`` of device
``k``: one ``view``, no copy, and one ``batch_norm`` call over ``G * C`` channels computes every
device's statistics at once. The sampler (``repro.data.augment.ResumableSampler``) lays batches
out that way. (A channels-last activation cannot be viewed so and is copied.)

State: per-device buffers are stored flat, ``(G * C,)``, device ``k`` at ``[k * C, (k + 1) * C)``;
:func:`device_buffers` and :func:`load_device_buffers` read and write one device's slice, with
the names and shapes of a one-device layer, so a checkpoint of ``W`` processes x ``G`` devices
has the form of one of ``W * G`` processes. :func:`single_device` gives device ``k``'s network
(plain layers): what is probed and exported, as the authors dump rank 0's teacher.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def as_devices(x: torch.Tensor, devices: int) -> torch.Tensor:
    """``(G * n, C, ...)`` in device-minor order -> ``(n, G * C, ...)``: channel ``k * C + c`` is
    channel ``c`` of device ``k`` (a view when ``x`` is contiguous)."""
    if devices == 1:
        return x
    if x.shape[0] % devices:
        raise ValueError(f"a batch of {x.shape[0]} images does not split into {devices} devices "
                         f"of equal size")
    return x.reshape(x.shape[0] // devices, devices * x.shape[1], *x.shape[2:])


def repeated(t: torch.Tensor, devices: int) -> torch.Tensor:
    """A per-channel tensor of one device repeated for every device (``(C,) -> (G * C,)``)."""
    # expand + reshape: one copy forward, one sum backward (measured cheaper than repeat / tile)
    return t if devices == 1 else t.expand(devices, *t.shape).reshape(-1)


class _DeviceBatchNorm(nn.Module):
    """Plain batch norm of each emulated device: training statistics of the device's own images,
    running statistics per device (updated as ``nn.BatchNorm`` does, momentum 0.1, unbiased
    variance), eval mode with each device's running statistics. One weight and bias shared by
    all devices (one set of parameters, as DDP keeps them identical across GPUs).

    State-dict keys are ``nn.BatchNorm``'s; the running statistics are ``(G * C,)``.
    """

    _plain: type[nn.modules.batchnorm._BatchNorm]
    _expected_dims: tuple[int, ...] = ()
    per_device = ("running_mean", "running_var")

    def __init__(self, num_features: int, devices: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.num_features, self.devices, self.eps, self.momentum = num_features, devices, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(devices * num_features))
        self.register_buffer("running_var", torch.ones(devices * num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self._affine_cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.num_features}, devices={self.devices}, eps={self.eps}, momentum={self.momentum}"

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        # The repeated weight and bias, reused while the parameters are unchanged: the two views'
        # forwards of one step share them (half the repeats; bench/bench_devices.py). The key
        # holds the parameters' versions (an optimizer or EMA step changes them in place), their
        # storage (.to() moves them) and the grad mode (a no-grad copy must not reach autograd).
        w, b = self.weight, self.bias
        key = (w._version, b._version, w.data_ptr(), b.data_ptr(), torch.is_grad_enabled())
        if self._affine_cache is None or self._affine_cache[0] != key:
            self._affine_cache = (key, repeated(w, self.devices), repeated(b, self.devices))
        return self._affine_cache[1], self._affine_cache[2]

    def __getstate__(self):
        # deepcopy and pickle: the cache holds autograd-attached tensors (which deepcopy refuses);
        # a copy rebuilds it.
        return {**super().__getstate__(), "_affine_cache": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self._expected_dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(map(str, self._expected_dims))}-d "
                             f"input, got shape {tuple(x.shape)}")
        weight, bias = self._affine()
        if self.training:
            self.num_batches_tracked.add_(1)
        y = F.batch_norm(as_devices(x, self.devices), self.running_mean, self.running_var, weight, bias,
                         self.training, self.momentum, self.eps)
        return y.reshape(x.shape)

    def plain(self, k: int) -> nn.Module:
        """Device ``k``'s layer as an ``nn.BatchNorm1d`` / ``2d`` with its running statistics."""
        new = self._plain(self.num_features, eps=self.eps, momentum=self.momentum)
        new.load_state_dict(slice_state(self, k, self.state_dict()))
        return new.to(self.weight.device, self.weight.dtype).train(self.training)


class DeviceBatchNorm1d(_DeviceBatchNorm):
    _plain = nn.BatchNorm1d
    _expected_dims = (2, 3)


class DeviceBatchNorm2d(_DeviceBatchNorm):
    _plain = nn.BatchNorm2d
    _expected_dims = (4,)


def convert_to_device_bn(module: nn.Module, devices: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` / ``2d`` of ``module`` by its per-device version with
    ``devices`` devices (parameters copied, running statistics copied to every device).
    ``devices == 1`` returns ``module`` unchanged."""
    if devices == 1:
        return module
    cls = {nn.BatchNorm1d: DeviceBatchNorm1d, nn.BatchNorm2d: DeviceBatchNorm2d}.get(type(module))
    if cls is not None:
        if not module.affine or not module.track_running_stats:
            raise ValueError(f"cannot convert {module}: needs affine=True and track_running_stats=True")
        new = cls(module.num_features, devices, eps=module.eps, momentum=module.momentum)
        with torch.no_grad():
            new.weight.copy_(module.weight)
            new.bias.copy_(module.bias)
            new.running_mean.copy_(repeated(module.running_mean, devices))
            new.running_var.copy_(repeated(module.running_var, devices))
            new.num_batches_tracked.copy_(module.num_batches_tracked)
        new.weight.requires_grad_(module.weight.requires_grad)
        new.bias.requires_grad_(module.bias.requires_grad)
        return new.to(module.weight.device, module.weight.dtype).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_to_device_bn(child, devices))
    return module


# --------------------------------------------------------------------------- one device's state


def _device_layers(model: nn.Module):
    """(prefix, layer) of every layer of ``model`` that keeps per-device buffers."""
    for name, m in model.named_modules():
        if getattr(m, "devices", 1) > 1 and hasattr(m, "per_device"):
            yield (name + "." if name else ""), m


def devices_of(model: nn.Module) -> int:
    """The number of emulated devices of ``model``: its ``devices`` attribute where it has one (a
    model whose norms are all Synced BN still runs on that many devices, with no per-device
    state), else its layers' (1 when none is split)."""
    counts = {m.devices for _, m in _device_layers(model)}
    declared = getattr(model, "devices", None)
    if isinstance(declared, int):
        counts.add(declared)
    if len(counts) > 1:
        raise ValueError(f"layers of one model hold different device counts: {sorted(counts)}")
    return counts.pop() if counts else 1


def slice_state(layer: nn.Module, k: int, state: dict, prefix: str = "") -> dict:
    """``state`` with ``layer``'s per-device entries (under ``prefix``) cut to device ``k``'s."""
    out = dict(state)
    for b in layer.per_device:
        if prefix + b in out:
            out[prefix + b] = out[prefix + b].view(layer.devices, -1)[k]
    return out


def device_buffers(model: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Device ``k``'s buffers: names and shapes as in a one-device model (copies, on the CPU)."""
    if not 0 <= k < devices_of(model):
        raise IndexError(f"device {k} outside [0, {devices_of(model)})")
    out = {n: b.detach().cpu().clone() for n, b in model.named_buffers()}
    for prefix, layer in _device_layers(model):
        out = slice_state(layer, k, out, prefix)
    return out


@torch.no_grad()
def load_device_buffers(model: nn.Module, k: int, buffers: dict[str, torch.Tensor]) -> None:
    """Write device ``k``'s buffers (as :func:`device_buffers` gives them) into ``model``.

    Buffers shared by all devices (Momentum BN's alpha and pending count, ``num_batches_tracked``)
    are the same in every device's record; each one writes them."""
    views = {n: b for n, b in model.named_buffers()}
    for prefix, layer in _device_layers(model):
        for b in layer.per_device:
            views[prefix + b] = views[prefix + b].view(layer.devices, -1)[k]
    missing = sorted(set(views) - set(buffers))
    if missing:
        raise KeyError(f"no saved value for buffer(s) {missing[:3]}")
    for name, target in views.items():
        target.copy_(buffers[name])


def device_state_dict(model: nn.Module, k: int = 0) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with device ``k``'s buffers: the state dict of device ``k``'s
    one-device network (:func:`single_device`), without copying the model."""
    state = model.state_dict()
    for prefix, layer in _device_layers(model):
        state = slice_state(layer, k, state, prefix)
    return state


def single_device(model: nn.Module, k: int = 0) -> nn.Module:
    """A copy of ``model`` as device ``k`` alone: every per-device layer replaced by its plain
    one-device layer holding device ``k``'s statistics. ``model`` itself is unchanged; a model
    with one device is returned as it is."""
    if devices_of(model) == 1:
        return model
    out = copy.deepcopy(model)
    for prefix, layer in list(_device_layers(out)):
        parent_name, _, child = prefix.rstrip(".").rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, layer.plain(k))
    return out


def load_devices_state(model: nn.Module, state: dict[str, torch.Tensor],
                       buffers: list[dict[str, torch.Tensor]]) -> None:
    """Restore ``model`` from a one-device-shaped state dict (its parameters; as
    :func:`device_state_dict` gives it) and every device's buffers (``buffers[k]`` as
    :func:`device_buffers` gives device ``k``'s). Keys must match exactly."""
    devices = devices_of(model)
    if len(buffers) != devices:
        raise ValueError(f"{len(buffers)} devices' buffers for a model of {devices} devices")
    per_device = {prefix + b for prefix, layer in _device_layers(model) for b in layer.per_device}
    full = model.state_dict()
    # Per-device entries keep the model's own (full) tensors here; load_device_buffers sets them.
    model.load_state_dict({**{k: v for k, v in state.items() if k not in per_device},
                           **{k: full[k] for k in per_device if k in state}})
    for k, own in enumerate(buffers):
        load_device_buffers(model, k, own)
