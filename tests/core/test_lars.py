"""LARS (SPEC §4, ImageNet 4096-batch runs): hand-computed steps in float64, both conventions."""

import io

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from repro.core.lars import LARS, lars_param_groups

CONVENTIONS = ["reference", "byol"]


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def weight_and_bias():
    """A 2-d weight with ||p|| = 5, ||g|| = 1 and a 1-d bias, gradients set."""
    w = nn.Parameter(t([3.0, 0.0], [0.0, 4.0]))
    w.grad = t([0.6, 0.0], [0.0, 0.8])
    b = nn.Parameter(t(1.0, -2.0))
    b.grad = t(0.5, 0.5)
    return w, b


def optimizer(w, b, convention, *, lr=0.5, wd=0.1, exclude_wd=False):
    groups = lars_param_groups([("w", w), ("b", b)], wd, lars_exclude_wd=exclude_wd)  # w adapted, b excluded
    return LARS(groups, lr=lr, momentum=0.9, eta=0.001, convention=convention)


def test_one_step_byol_convention():
    w, b = weight_and_bias()
    optimizer(w, b, "byol").step()
    # d = g + 0.1 p = diag(0.9, 1.2), ||d|| = 1.5; trust = 0.001 * 5 / 1.5 = 1/300
    # v = d / 300 = diag(0.003, 0.004); p <- p - 0.5 v
    assert_close(w.detach(), t([2.9985, 0.0], [0.0, 3.998]), rtol=0, atol=1e-15)
    # bias: excluded, wd applied (reference-code default): d = (0.6, 0.3), p <- p - 0.5 d
    assert_close(b.detach(), t(0.7, -2.15), rtol=0, atol=1e-15)


def test_one_step_reference_convention():
    w, b = weight_and_bias()
    optimizer(w, b, "reference").step()
    # trust = eta ||p|| / (||g|| + wd ||p|| + 1e-8) = 0.005 / (1 + 0.5 + 1e-8)
    # v = lr * trust * (g + wd p); p <- p - v
    trust = 0.005 / (1.5 + 1e-8)
    assert_close(w.detach(), t([3 - 0.5 * trust * 0.9, 0.0], [0.0, 4 - 0.5 * trust * 1.2]), rtol=0, atol=1e-15)
    assert_close(b.detach(), t(0.7, -2.15), rtol=0, atol=1e-15)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_wd_exclusion_only_touches_excluded_parameters(convention):
    w, b = weight_and_bias()
    w_ref, b_ref = weight_and_bias()
    optimizer(w, b, convention, exclude_wd=True).step()
    optimizer(w_ref, b_ref, convention, exclude_wd=False).step()
    assert_close(b.detach(), t(0.75, -2.25), rtol=0, atol=1e-15)  # p - 0.5 g, no decay
    assert torch.equal(w, w_ref)  # adapted tensors keep their weight decay


def test_momentum_accumulates_over_two_steps_with_a_changing_lr():
    # Excluded bias, no wd, g = (1, 1) both steps, lr 0.5 then 0.25:
    # byol:      v1 = g, v2 = 1.9 g;           p2 = p0 - 0.5 g - 0.25 * 1.9 g = p0 - 0.975 g
    # reference: v1 = 0.5 g, v2 = 0.45 g + 0.25 g; p2 = p0 - 0.5 g - 0.7 g    = p0 - 1.2 g
    for convention, total in [("byol", 0.975), ("reference", 1.2)]:
        b = nn.Parameter(t(1.0, -2.0))
        opt = LARS([{"params": [b], "lars_adapt": False}], lr=0.5, weight_decay=0.0, convention=convention)
        for lr in (0.5, 0.25):
            opt.param_groups[0]["lr"] = lr
            b.grad = t(1.0, 1.0)
            opt.step()
        assert_close(b.detach(), t(1.0 - total, -2.0 - total), rtol=0, atol=1e-15)


def test_momentum_of_an_adapted_weight_recomputes_the_trust_ratio():
    # byol, no wd, lr 100, g = diag(0.6, 0.8) (||g|| = 1) both steps, p0 = diag(3, 4):
    # trust1 = 0.001 * 5 = 0.005, v1 = 0.005 g, p1 = p0 - 0.5 g = diag(2.7, 3.6) (||p1|| = 4.5)
    # trust2 = 0.0045, v2 = 0.9 * 0.005 g + 0.0045 g = 0.009 g, p2 = p1 - 0.9 g = diag(2.16, 2.88)
    w = nn.Parameter(t([3.0, 0.0], [0.0, 4.0]))
    opt = LARS([w], lr=100.0, weight_decay=0.0, convention="byol")
    w.grad = t([0.6, 0.0], [0.0, 0.8])
    opt.step()
    assert_close(w.detach(), t([2.7, 0.0], [0.0, 3.6]), rtol=0, atol=1e-13)
    w.grad = t([0.6, 0.0], [0.0, 0.8])
    opt.step()
    assert_close(w.detach(), t([2.16, 0.0], [0.0, 2.88]), rtol=0, atol=1e-13)
    assert_close(opt.state[w]["momentum_buffer"], 0.009 * t([0.6, 0.0], [0.0, 0.8]), rtol=0, atol=1e-16)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_zero_or_missing_gradient_leaves_the_parameter_unchanged(convention):
    zero = nn.Parameter(t([3.0, 1.0], [2.0, 4.0]))
    zero.grad = torch.zeros_like(zero)
    missing = nn.Parameter(t([1.0, 2.0], [3.0, 4.0]))
    opt = LARS([zero, missing], lr=0.5, weight_decay=0.0, convention=convention)
    opt.step()
    assert torch.equal(zero, t([3.0, 1.0], [2.0, 4.0]))
    assert torch.equal(missing, t([1.0, 2.0], [3.0, 4.0]))
    assert missing not in opt.state  # no gradient: no state, no decay


def test_zero_weight_norm():
    # byol: trust ratio 1 when ||p|| = 0, i.e. a plain momentum-SGD step p <- -lr (g + wd p).
    g = t([1.0, 2.0], [2.0, 4.0])
    p = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    p.grad = g.clone()
    LARS([p], lr=0.1, weight_decay=0.1, convention="byol").step()
    assert_close(p.detach(), -0.1 * g, rtol=0, atol=1e-16)
    # reference: trust = eta * 0 / (...) = 0: an adapted zero tensor never moves (FIDELITY).
    p = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    p.grad = g.clone()
    LARS([p], lr=0.1, weight_decay=0.1, convention="reference").step()
    assert torch.equal(p, torch.zeros(2, 2, dtype=torch.float64))


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)
    ).double()


def test_param_groups_split_by_dimension_and_wd_option():
    model = tiny_model()
    frozen = nn.Linear(2, 2).double().requires_grad_(False)
    named = list(model.named_parameters()) + list(frozen.named_parameters())
    ref = lars_param_groups(named, 1e-6, lars_exclude_wd=False)
    paper = lars_param_groups(model, 1e-6, lars_exclude_wd=True)
    for groups in (ref, paper):
        adapted, excluded = groups
        assert adapted["lars_adapt"] and not excluded["lars_adapt"]
        assert [p.shape for p in adapted["params"]] == [(3, 2, 3, 3), (2, 12)]  # conv, linear weight
        assert [p.shape for p in excluded["params"]] == [(3,), (3,), (2,)]  # BN weight, BN bias, linear bias
        assert adapted["weight_decay"] == 1e-6
    assert ref[1]["weight_decay"] == 1e-6 and paper[1]["weight_decay"] == 0.0
    # An optimizer built from the groups keeps the flags (config-free optimizer).
    opt = LARS(paper, lr=0.1)
    assert [g["lars_adapt"] for g in opt.param_groups] == [True, False]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]


def _steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        x = torch.randn(4, 2, 4, 4, generator=g, dtype=torch.float64)
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = 0.1 * (k + 1)
        opt.zero_grad(set_to_none=True)
        model(x).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_state_dict_round_trip_resumes_identically(convention):
    model = tiny_model()
    opt = LARS(lars_param_groups(model, 0.01, lars_exclude_wd=False), lr=0.1, convention=convention)
    _steps(model, opt, 2, seed=1)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _steps(model, opt, 2, seed=2)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # plain tensors and numbers only
    resumed = tiny_model()
    opt2 = LARS(lars_param_groups(resumed, 0.5, lars_exclude_wd=True), lr=0.7, convention=convention)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])  # hyper-parameters (wd, flags) come from the checkpoint
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.01, 0.01]
    _steps(resumed, opt2, 2, seed=2)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


def test_bad_arguments_are_refused():
    p = [nn.Parameter(torch.ones(2, 2))]
    with pytest.raises(ValueError, match="convention"):
        LARS(p, lr=0.1, convention="lamb")
    with pytest.raises(ValueError, match="eta"):
        LARS(p, lr=0.1, eta=0.0)
    with pytest.raises(ValueError, match="momentum"):
        LARS(p, lr=0.1, momentum=1.0)


def test_head_rule_one_step_and_zero_weight_norm():
    # rule "head" (the authors' released HEAD): trust = eta ||p|| / (||g|| + wd ||p||), no 1e-8
    # = 0.005 / 1.5 exactly; the bias (excluded) is unchanged by the rule.
    w, b = weight_and_bias()
    LARS([{"params": [w], "lars_adapt": True}, {"params": [b], "lars_adapt": False}], lr=0.5,
         momentum=0.9, weight_decay=0.1, eta=0.001, rule="head").step()
    trust = 0.005 / 1.5
    assert_close(w.detach(), t([3 - 0.5 * trust * 0.9, 0.0], [0.0, 4 - 0.5 * trust * 1.2]), rtol=0, atol=1e-15)
    assert_close(b.detach(), t(0.7, -2.15), rtol=0, atol=1e-15)
    # ||p|| * ||g|| = 0 <= 1e-8: trust 1, so an adapted zero tensor MOVES under HEAD
    # (p <- -lr (g + wd p) = -0.1 g), where it never moves under e17a948 (test above).
    g = t([1.0, 2.0], [2.0, 4.0])
    p = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    p.grad = g.clone()
    LARS([p], lr=0.1, weight_decay=0.1, rule="head").step()
    assert_close(p.detach(), -0.1 * g, rtol=0, atol=1e-16)
    with pytest.raises(ValueError, match="rule"):
        LARS([p], lr=0.1, rule="HEAD")
