"""Property tests of Momentum BN (Section 3.2, Eq. 3, 5, 6), in float64."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from repro.core.momentum_bn import (
    MomentumBatchNorm1d,
    MomentumBatchNorm2d,
    convert_to_momentum_bn,
    deferred_update,
    set_alpha,
)

VARIANCES = ["reference", "biased"]


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py


def layer2d(c=3, variance="reference", seed=0):
    g = torch.Generator().manual_seed(seed)
    m = MomentumBatchNorm2d(c, variance=variance).double()
    with torch.no_grad():
        m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.copy_(torch.randn(c, generator=g))
        m.running_mean.copy_(torch.randn(c, generator=g))
        m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return m


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 1


def manual_stats(x, variance):
    dims = [0] + list(range(2, x.dim()))
    n = x.numel() // x.shape[1]
    mean = x.mean(dims)
    var = ((x - mean.view(1, -1, *[1] * (x.dim() - 2))) ** 2).mean(dims)
    return mean, var * ((n / (n - 1)) ** 2 if variance == "reference" else 1.0)


def manual_bn(x, mean, var, m):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + m.eps) * m.weight.view(shape) + m.bias.view(shape)


def test_fresh_layer_state():
    m = MomentumBatchNorm2d(4)
    assert_close(m.running_mean, torch.zeros(4))
    assert_close(m.running_var, torch.ones(4))
    assert m.alpha.item() == 1.0
    assert {"weight", "bias", "running_mean", "running_var"} <= set(m.state_dict())


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("shape", [(8, 3, 5, 4), (16, 3)])
def test_alpha_one_is_batch_statistics_bn(variance, shape):
    m = layer2d(variance=variance) if len(shape) == 4 else MomentumBatchNorm1d(3, variance=variance)
    x = rand(*shape)
    with torch.no_grad():
        y = m(x)
    mean, var = manual_stats(x, variance)
    assert_close(y, manual_bn(x, mean, var, m))
    if variance == "biased":  # the paper's Eq. 1: exactly torch's training-mode BN
        assert_close(y, F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps))


def test_reference_variance_is_biased_times_n_over_n_minus_1_squared():
    # n = 32 samples of a BN1d: the reference convention inflates the variance by (32/31)^2.
    x = rand(32, 5)
    ref, paper = MomentumBatchNorm1d(5, variance="reference"), MomentumBatchNorm1d(5, variance="biased")
    _, v_ref = ref.batch_stats(x)
    _, v_paper = paper.batch_stats(x)
    assert_close(v_ref / v_paper, torch.full((5,), (32 / 31) ** 2))
    assert_close(v_paper, x.var(0, correction=0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), variance=st.sampled_from(VARIANCES))
def test_alpha_zero_output_of_a_sample_ignores_the_rest_of_the_batch(seed, variance):
    m = layer2d(variance=variance, seed=seed)
    set_alpha(m, 0.0)
    x0 = rand(1, 3, 4, 4, seed=seed)
    a = torch.cat([x0, rand(5, 3, 4, 4, seed=seed + 1)])
    b = torch.cat([x0, 10 * rand(7, 3, 4, 4, seed=seed + 2)])
    with torch.no_grad(), deferred_update(m):
        ya, yb = m(a), m(b)
    assert_close(ya[:1], yb[:1])
    m.eval()
    assert_close(ya[:1], m(x0))  # alpha = 0 normalises with the history alone


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0), variance=st.sampled_from(VARIANCES))
def test_lazy_update_second_view_does_not_see_the_first(seed, alpha, variance):
    view2 = rand(6, 3, 4, 4, seed=seed)
    outs = []
    for first in (rand(6, 3, 4, 4, seed=seed + 1), 5 * rand(6, 3, 4, 4, seed=seed + 2) - 3):
        m = layer2d(variance=variance, seed=seed)
        set_alpha(m, alpha)
        with torch.no_grad(), deferred_update(m):
            m(first)
            outs.append(m(view2))
    assert_close(outs[0], outs[1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0), variance=st.sampled_from(VARIANCES))
def test_committed_history_is_eq6_and_order_free(seed, alpha, variance):
    v1, v2 = rand(6, 3, 4, 4, seed=seed), 3 * rand(6, 3, 4, 4, seed=seed + 1)
    base = layer2d(variance=variance, seed=seed)
    r_mean, r_var = base.running_mean.clone(), base.running_var.clone()
    (m1, s1), (m2, s2) = manual_stats(v1, variance), manual_stats(v2, variance)
    expect_mean = alpha * (m1 + m2) / 2 + (1 - alpha) * r_mean
    expect_var = alpha * (s1 + s2) / 2 + (1 - alpha) * r_var
    results = []
    for order in ((v1, v2), (v2, v1)):
        m = copy.deepcopy(base)
        set_alpha(m, alpha)
        with torch.no_grad(), deferred_update(m):
            for v in order:
                m(v)
            assert_close(m.running_mean, r_mean)  # nothing committed inside the block
        results.append((m.running_mean.clone(), m.running_var.clone()))
        assert m.pending_count.item() == 0
    assert_close(results[0][0], expect_mean)
    assert_close(results[0][1], expect_var)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_single_pass_normalises_with_old_history_then_commits():
    m = layer2d()
    set_alpha(m, 0.3)
    x = rand(8, 3, 4, 4)
    r_mean, r_var = m.running_mean.clone(), m.running_var.clone()
    mean, var = manual_stats(x, "reference")
    with torch.no_grad():
        y = m(x)
    assert_close(y, manual_bn(x, 0.3 * mean + 0.7 * r_mean, 0.3 * var + 0.7 * r_var, m))
    assert_close(m.running_mean, 0.3 * mean + 0.7 * r_mean)
    assert_close(m.running_var, 0.3 * var + 0.7 * r_var)


def test_eval_mode_changes_nothing_and_uses_history():
    m = layer2d()
    set_alpha(m, 0.5)
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = rand(4, 3, 4, 4)
    with deferred_update(m):
        y = m(x)
    y2 = m(x)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert_close(y, manual_bn(x, m.running_mean, m.running_var, m))
    assert torch.equal(y, y2)


def test_failed_block_leaves_history_untouched():
    m = layer2d()
    before = m.running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), deferred_update(m):
        m(rand(4, 3, 4, 4))
        raise RuntimeError("boom")
    assert torch.equal(m.running_mean, before) and m.pending_count.item() == 0 and not m.deferring


def test_state_dict_round_trip_resumes_exactly_even_mid_block():
    a = layer2d()
    set_alpha(a, 0.25)
    v1, v2 = rand(6, 3, 4, 4, seed=1), rand(6, 3, 4, 4, seed=2)
    with torch.no_grad(), deferred_update(a):
        a(v1)
        state = {k: v.clone() for k, v in a.state_dict().items()}  # pending stats of view 1
        y_a = a(v2)
    b = MomentumBatchNorm2d(3).double()
    b.load_state_dict(state)
    assert b.alpha.item() == 0.25 and b.pending_count.item() == 1
    b.deferring = True  # resume inside the block, as the interrupted run was
    with torch.no_grad():
        y_b = b(v2)
    b.deferring = False
    b.commit_pending()
    assert torch.equal(y_a, y_b)
    assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)


def test_set_alpha_reaches_every_layer_and_checks_range():
    net = nn.Sequential(MomentumBatchNorm2d(2), nn.Sequential(MomentumBatchNorm1d(3)))
    set_alpha(net, 0.125)
    assert [m.alpha.item() for m in net.modules() if hasattr(m, "alpha")] == [0.125, 0.125]
    with pytest.raises(ValueError, match="alpha"):
        set_alpha(net, 1.5)


def test_nested_blocks_are_refused():
    m = layer2d()
    with deferred_update(m), pytest.raises(RuntimeError, match="nested"), deferred_update(m):
        pass


def test_wrong_input_rank_and_single_value_are_clear_errors():
    with pytest.raises(ValueError, match="4-d"):
        MomentumBatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="more than 1 value"):
        MomentumBatchNorm1d(3)(torch.randn(1, 3))


def test_gradient_path_matches_no_grad_path():
    m = layer2d()
    set_alpha(m, 0.6)
    x = rand(5, 3, 3, 3)
    with deferred_update(m), torch.no_grad():
        y0 = m(x)
    m2 = layer2d()
    set_alpha(m2, 0.6)
    xg = x.clone().requires_grad_(True)
    with deferred_update(m2):
        y1 = m2(xg)
    y1.sum().backward()
    assert_close(y0, y1)
    assert xg.grad is not None


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_conversion_covers_every_bn_and_copies_state(arch):
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)().float()
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(), bn.weight.data.uniform_()
    before = {k: v.clone() for k, v in net.state_dict().items() if "num_batches" not in k}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    net = convert_to_momentum_bn(net, variance="biased")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    mbns = [m for m in net.modules() if isinstance(m, MomentumBatchNorm2d)]
    assert len(mbns) == n_bn == {"resnet18": 20, "resnet50": 53}[arch]
    assert all(m.variance == "biased" for m in mbns)
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # Teacher weights load into a plain torchvision ResNet (extra buffers set aside).
    plain = getattr(torchvision.models, arch)()
    missing, unexpected = plain.load_state_dict(after, strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing)
    assert all(k.rsplit(".", 1)[1] in {"alpha", "pending_mean", "pending_var", "pending_count"} for k in unexpected)


def test_conversion_of_heads_bn1d():
    head = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    head = convert_to_momentum_bn(head)
    assert isinstance(head[1], MomentumBatchNorm1d)


def test_statistics_and_history_stay_float32_under_bf16_autocast():
    # A teacher block under CPU bf16 autocast: the conv's output is bf16; the batch statistics,
    # the parked per-view statistics and the history must stay float32, and equal (to float32
    # rounding) the statistics of those same bf16 activations computed in float32.
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, bias=False).float()  # float32 (the module's fixture defaults to float64)
    bn = MomentumBatchNorm2d(8, variance="biased").float()
    set_alpha(bn, 0.5)
    v1, v2 = torch.randn(16, 3, 12, 12).float() * 2 + 3, torch.randn(16, 3, 12, 12).float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h1, h2 = conv(v1), conv(v2)
        assert h1.dtype == torch.bfloat16
        with deferred_update(bn):
            y1 = bn(h1)
            assert bn.pending_mean.dtype == torch.float32 and bn.pending_views == 1
            bn(h2)
    assert y1.dtype == torch.bfloat16
    for buf in (bn.running_mean, bn.running_var, bn.pending_mean, bn.pending_var):
        assert buf.dtype == torch.float32
    f1, f2 = h1.double(), h2.double()
    mean = (f1.mean((0, 2, 3)) + f2.mean((0, 2, 3))) / 2
    var = (f1.var((0, 2, 3), correction=0) + f2.var((0, 2, 3), correction=0)) / 2
    # R <- 0.5 * stat + 0.5 * R, from R = (0, 1)
    assert_close(bn.running_mean.double(), 0.5 * mean, rtol=1e-5, atol=1e-6)
    assert_close(bn.running_var.double(), 0.5 * var + 0.5, rtol=1e-5, atol=1e-6)
    assert bn.pending_views == 0 and bn.pending_count.item() == 0


def test_pending_views_mirror_follows_a_loaded_state():
    a = layer2d()
    with torch.no_grad(), deferred_update(a):
        a(rand(6, 3, 4, 4, seed=1))
        state = {k: v.clone() for k, v in a.state_dict().items()}
    b = MomentumBatchNorm2d(3).double()
    b.load_state_dict(state)
    assert b.pending_views == 1  # restored from the buffer: the next block refuses to start
    with pytest.raises(RuntimeError, match="uncommitted"):
        with deferred_update(b):
            pass
