"""EMA of the teacher (Eq. 7) and the schedules (Eq. 8, warm-up + cosine), exact values."""

import math

import pytest
import torch
from torch import nn

from repro.core import schedules as S
from repro.core.ema import ema_update


def pair():
    torch.manual_seed(0)
    t, s = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    s[1].running_mean.fill_(5.0)
    s[1].num_batches_tracked.fill_(7)
    return t, s


def test_tau_one_is_a_no_op_and_tau_zero_copies():
    t, s = pair()
    before = [p.clone() for p in t.parameters()]
    ema_update(t, s, tau=1.0)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), before))
    ema_update(t, s, tau=0.0)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), s.parameters()))


def test_ema_value_and_buffers_untouched_by_default():
    t, s = pair()
    expect = [0.9 * a + 0.1 * b for a, b in zip(t.parameters(), s.parameters())]
    ema_update(t, s, tau=0.9)
    for a, b in zip(t.parameters(), expect):
        torch.testing.assert_close(a, b)
    assert torch.equal(t[1].running_mean, torch.zeros(4))  # parameters only
    assert t[1].num_batches_tracked.item() == 0


def test_eman_buffers_follow_the_same_ema():
    t, s = pair()
    ema_update(t, s, tau=0.75, buffers=True)
    torch.testing.assert_close(t[1].running_mean, torch.full((4,), 1.25))
    assert t[1].num_batches_tracked.item() == 7


def test_mismatched_modules_are_refused():
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)


@pytest.mark.parametrize(
    "step,total,m_base,tau",
    [(0, 100, 0.01, 0.99), (50, 100, 0.01, 0.995), (100, 100, 0.01, 1.0), (25, 100, 0.032, 1 - 0.032 * (math.cos(math.pi / 4) + 1) / 2)],
)
def test_tau_schedule(step, total, m_base, tau):
    assert S.tau_at(step, total, m_base) == pytest.approx(tau, abs=1e-15)


@pytest.mark.parametrize(
    "step,total,base,fixed,alpha",
    [(0, 10, 1.0, None, 1.0), (5, 10, 1.0, None, 0.5), (10, 10, 1.0, None, 0.0), (5, 10, 0.5, None, 0.25),
     (3, 10, 1.0, 0.064, 0.064), (0, 10, 1.0, 0.0, 0.0)],
)
def test_alpha_schedule(step, total, base, fixed, alpha):
    assert S.alpha_at(step, total, base, fixed) == pytest.approx(alpha, abs=1e-15)


@pytest.mark.parametrize(
    "step,expect",
    [(0, 1e-6), (5, 1e-6 + (0.4 - 1e-6) / 2), (10, 0.4), (55, 0.2), (100, 0.0), (32.5, 0.4 * (math.cos(math.pi / 4) + 1) / 2)],
)
def test_lr_warmup_then_cosine(step, expect):
    lr = S.lr_at(step, 100, peak_lr=0.4, warmup_steps=10, warmup_start_lr=S.warmup_start(0.4, "reference"))
    assert lr == pytest.approx(expect, abs=1e-12)


def test_warmup_modes_and_scaling_rules():
    assert S.warmup_start(0.4, "paper") == pytest.approx(4e-4)
    assert S.warmup_start(0.4, "reference") == 1e-6
    with pytest.raises(ValueError):
        S.warmup_start(0.4, "other")
    assert S.scaled_lr(0.1, 2048) == pytest.approx(0.8)  # Table 1: 0.1 per 256, 64 x 32
    assert S.scaled_lr(0.45, 4096) == pytest.approx(7.2)
    # Table 4, BN 128 on 128 GPUs: k = 16384 / 4096 = 4 -> lr 0.3 * 64 = 19.2, m_base 0.04
    assert S.equivalent_hparams(0.3, 0.01, 16384, 4096) == pytest.approx((19.2, 0.04))
    assert S.equivalent_hparams(0.05, 0.01, 1024, None) == pytest.approx((0.2, 0.01))  # no rule
    # m_base * B / B0, in that order: 0.02 * 8 / 48 = 0.0033333333333333335, one ulp above
    # 0.02 * (8 / 48); a run id hashes tau's inputs, so the order is part of the contract
    assert S.equivalent_hparams(0.1, 0.02, 8, 48)[1] == 0.0033333333333333335
    with pytest.raises(ValueError):
        S.equivalent_hparams(0.05, 0.01, 0, 4096)
    with pytest.raises(ValueError):
        S.equivalent_hparams(0.05, 0.01, 256, 0)


def test_steps_per_epoch_total_and_last_step_pinned():
    # drop_last: only full batches count; the tail that does not fill one is dropped
    assert [S.steps_per_epoch(n, b) for n, b in [(105_000, 2048), (1_281_167, 4096), (1797, 128), (256, 256),
                                                 (255, 128), (10, 10)]] == [51, 312, 14, 1, 1, 1]
    with pytest.raises(ValueError, match="no full batch"):
        S.steps_per_epoch(100, 128)
    with pytest.raises(ValueError, match="positive"):
        S.steps_per_epoch(100, 0)
    # epochs x steps per epoch, rounded (fractional epochs), at least 1
    assert S.total_steps(400, 51) == 20_400  # Table 1, paper scale
    assert S.total_steps(300, 312) == 93_600  # Table 2, ResNet-50 at 4096
    assert S.total_steps(0.5, 51) == 26 and S.total_steps(0.01, 3) == 1 and S.total_steps(0, 51) == 1
    assert S.last_step(20_400, None) == 20_400 and S.last_step(20_400, 5) == 5 and S.last_step(3, 5) == 3
    assert S.last_step(20_400, 0) == 0  # the random-init control
