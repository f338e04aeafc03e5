"""Synced BN on CPU with two real gloo processes equals one BN over the whole batch."""

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from repro.core.sync_bn import SyncBatchNorm, convert_to_sync_bn

WHOLE = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
GRAD_OUT = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
SPLIT = (5, 7)  # unequal shards: the combination must weight by count


def _synced(rank, world_size):
    start = sum(SPLIT[:rank])
    x = WHOLE[start : start + SPLIT[rank]].clone().requires_grad_(True)
    bn = SyncBatchNorm(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    y = bn(x)
    (y * GRAD_OUT[start : start + SPLIT[rank]]).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def test_two_processes_match_one_bn_over_the_concatenated_batch(distributed):
    ranks = distributed(_synced, 2)
    x = WHOLE.clone().requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    y = bn(x)
    (y * GRAD_OUT).sum().backward()
    assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad)
    # Parameter gradients: each process holds its shard's part; their sum is the whole.
    assert_close(ranks[0]["w_grad"] + ranks[1]["w_grad"], bn.weight.grad)
    assert_close(ranks[0]["b_grad"] + ranks[1]["b_grad"], bn.bias.grad)
    for r in ranks:  # running statistics: global mean and unbiased global variance
        assert_close(r["running_mean"], bn.running_mean)
        assert_close(r["running_var"], bn.running_var)


def test_without_a_process_group_it_is_plain_bn():
    x = WHOLE.float()
    bn = SyncBatchNorm(3)
    assert_close(bn(x), F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))


def test_convert_covers_bn1d_and_bn2d_and_keeps_state():
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
    net[0].running_mean.fill_(2.0)
    net = convert_to_sync_bn(net)
    assert isinstance(net[0], SyncBatchNorm) and isinstance(net[1][0], SyncBatchNorm)
    assert torch.equal(net[0].running_mean, torch.full((3,), 2.0))


def _synced_bf16(rank, world_size):
    # A conv + Synced BN block under CPU bf16 autocast (train.precision bf16): the conv's output
    # is bf16, the gathered statistics and the running buffers must stay float32.
    start = sum(SPLIT[:rank])
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 4, 1, bias=False), SyncBatchNorm(4)
    x = WHOLE[start : start + SPLIT[rank]].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        y = bn(h)
    y.float().sum().backward()
    return {"h": h.detach(), "y_dtype": str(y.dtype), "running_mean": bn.running_mean,
            "running_var": bn.running_var, "grad": conv.weight.grad}


def test_under_bf16_autocast_the_statistics_are_float32_and_global(distributed):
    ranks = distributed(_synced_bf16, 2)
    h = torch.cat([r["h"] for r in ranks]).double()  # the bf16 activations of both processes
    assert ranks[0]["h"].dtype == torch.bfloat16 and ranks[0]["y_dtype"] == "torch.bfloat16"
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3))  # unbiased, as the running variance
    for r in ranks:
        assert r["running_mean"].dtype == torch.float32 and r["grad"].dtype == torch.float32
        assert_close(r["running_mean"].double(), 0.1 * mean, rtol=1e-5, atol=1e-6)
        assert_close(r["running_var"].double(), 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
