"""Emulated devices (repro/core/devices.py), layer by layer, in float64: G devices in one layer
equal G one-device layers, each on its own images (device k at positions k, k + G, ...)."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from repro.core.devices import (
    DeviceBatchNorm1d,
    DeviceBatchNorm2d,
    as_devices,
    convert_to_device_bn,
    device_buffers,
    device_state_dict,
    devices_of,
    load_devices_state,
    single_device,
)
from repro.core.momentum_bn import MomentumBatchNorm2d, convert_to_momentum_bn, deferred_update, set_alpha
from repro.data.augment import ResumableSampler


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def randomised(bn: nn.Module, seed=0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    return bn


def device_slice(x, k, devices):
    return x[k::devices]


@pytest.mark.parametrize("devices", [2, 3])
@pytest.mark.parametrize("shape", [(12, 4, 3, 3), (12, 5)])
def test_device_bn_is_one_bn_per_device_forward_backward_and_running_stats(devices, shape):
    plain = randomised(nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1]))
    refs = [copy.deepcopy(plain) for _ in range(devices)]
    layer = convert_to_device_bn(copy.deepcopy(plain), devices)
    assert isinstance(layer, DeviceBatchNorm2d if len(shape) == 4 else DeviceBatchNorm1d)
    x = rand(*shape).requires_grad_()
    grad = rand(*shape, seed=1)
    for _ in range(2):  # two steps: the running statistics carry over, per device
        y = layer(x)
        xs = [device_slice(x, k, devices).detach().requires_grad_() for k in range(devices)]
        ys = [bn(xk) for bn, xk in zip(refs, xs)]
        for k in range(devices):
            assert_close(device_slice(y, k, devices), ys[k])
        (gx, gw, gb) = torch.autograd.grad(y, (x, layer.weight, layer.bias), grad)
        ref_g = [torch.autograd.grad(ys[k], (xs[k], refs[k].weight, refs[k].bias), device_slice(grad, k, devices))
                 for k in range(devices)]
        for k in range(devices):
            assert_close(device_slice(gx, k, devices), ref_g[k][0])
        # one weight shared by the devices: its gradient is the sum of the devices' gradients
        assert_close(gw, sum(g[1] for g in ref_g))
        assert_close(gb, sum(g[2] for g in ref_g))
    for k in range(devices):
        own = device_buffers(layer, k)
        assert_close(own["running_mean"], refs[k].running_mean)
        assert_close(own["running_var"], refs[k].running_var)
    # eval mode: each device's images with its own running statistics
    layer.eval(), [r.eval() for r in refs]
    y = layer(x)
    for k in range(devices):
        assert_close(device_slice(y, k, devices), refs[k](device_slice(x, k, devices)))


def test_the_devices_statistics_really_differ():
    """Guards the test above against a layer that gives every device the same statistics."""
    layer = convert_to_device_bn(nn.BatchNorm2d(3), 2)
    x = rand(8, 3, 2, 2)
    x[1::2] += 5.0  # device 1's images are shifted
    layer(x)
    assert not torch.allclose(device_buffers(layer, 0)["running_mean"], device_buffers(layer, 1)["running_mean"])


@pytest.mark.parametrize("variance", ["reference", "biased"])
def test_momentum_bn_keeps_one_history_per_device_through_the_lazy_update(variance):
    devices = 3
    plain = randomised(MomentumBatchNorm2d(4, variance=variance))
    refs = [copy.deepcopy(plain) for _ in range(devices)]
    layer = convert_to_momentum_bn(nn.BatchNorm2d(4), variance=variance, devices=devices)
    with torch.no_grad():  # the same starting point on every device
        layer.weight.copy_(plain.weight), layer.bias.copy_(plain.bias)
        layer.running_mean.copy_(plain.running_mean.repeat(devices))
        layer.running_var.copy_(plain.running_var.repeat(devices))
    for step in range(3):
        alpha = [0.9, 0.5, 0.2][step]
        set_alpha(layer, alpha), [set_alpha(r, alpha) for r in refs]
        v1, v2 = rand(9, 4, 3, 3, seed=2 * step), rand(9, 4, 3, 3, seed=2 * step + 1)
        with torch.no_grad(), deferred_update(layer):
            y1, y2 = layer(v1), layer(v2)
        for k, ref in enumerate(refs):
            with torch.no_grad(), deferred_update(ref):
                r1, r2 = ref(device_slice(v1, k, devices)), ref(device_slice(v2, k, devices))
            assert_close(device_slice(y1, k, devices), r1)
            assert_close(device_slice(y2, k, devices), r2)
    for k, ref in enumerate(refs):
        own = device_buffers(layer, k)
        for name, value in ref.named_buffers():
            assert_close(own[name], value, msg=f"device {k} {name}")
    # the probe's layer: device 0's history in a one-device layer
    alone = layer.plain(0).eval()
    assert alone.running_mean.shape == (4,)
    assert_close(alone(v1), refs[0].eval()(v1))


def test_state_of_one_device_round_trips_and_has_one_device_shapes():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5))
    teacher = convert_to_momentum_bn(copy.deepcopy(model), devices=2)
    student = convert_to_device_bn(model, 2)
    for m in (student, teacher):
        with torch.no_grad():
            m(rand(6, 3, 2, 2))
        assert devices_of(m) == 2
        plain_shapes = {k: v.shape for k, v in single_device(m, 1).state_dict().items()}
        assert {k: v.shape for k, v in device_state_dict(m, 1).items()} == plain_shapes
        saved = [device_buffers(m, k) for k in range(2)]
        state = device_state_dict(m, 0)
        fresh = copy.deepcopy(m)
        with torch.no_grad():
            for b in fresh.buffers():
                b.zero_() if b.is_floating_point() else None
        load_devices_state(fresh, state, saved)
        for (n, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
            assert torch.equal(a, b), n


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="7 images does not split into 2 devices"):
        as_devices(rand(7, 3), 2)


@settings(max_examples=40, deadline=None)
@given(world=st.integers(1, 3), devices=st.integers(1, 4), per_device=st.integers(1, 3),
       extra=st.integers(0, 20), epoch=st.integers(0, 3), start=st.integers(0, 2))
def test_device_k_of_process_p_sees_what_rank_p_times_g_plus_k_would(world, devices, per_device, extra, epoch, start):
    n = world * devices * per_device * 3 + extra
    one = [ResumableSampler(n, rank=r, world_size=world * devices, seed=5, per_rank_batch_size=per_device)
           for r in range(world * devices)]
    many = [ResumableSampler(n, rank=p, world_size=world, seed=5, per_rank_batch_size=per_device, devices=devices)
            for p in range(world)]
    for s in one + many:
        s.set_epoch(epoch, start_batch=start)
    rank_items = [list(s) for s in one]
    for p, s in enumerate(many):
        items = list(s)
        assert len(items) == len(s) == len(rank_items[0]) * devices
        for k in range(devices):
            assert items[k::devices] == rank_items[p * devices + k]
