"""The student-teacher model (Section 3.4). The import layering is checked in tests/test_layering.py."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from repro.models.backbones import build_student_teacher, resnet
from repro.core.model import symmetrised_loss
from repro.core.momentum_bn import MomentumBatchNorm1d, MomentumBatchNorm2d
from repro.core.sync_bn import SyncBatchNorm


def tiny(teacher_norm="mbn", student_norm="bn"):
    torch.manual_seed(0)
    return build_student_teacher(
        "resnet18", student_norm=student_norm, teacher_norm=teacher_norm, width=8, small_stem=True,
        hidden_dim=16, projection_dim=8,
    )


def views(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)


def test_teacher_is_an_exact_copy_without_gradients():
    m = tiny()
    s = dict(m.student.named_parameters())
    for name, p in m.teacher.named_parameters():
        assert torch.equal(p, s[name]), name
        assert not p.requires_grad
    assert m.student.predictor is not None and m.teacher.predictor is None


@pytest.mark.parametrize(
    "teacher_norm,student_norm,cls",
    [("mbn", "bn", MomentumBatchNorm2d), ("syncbn", "bn", SyncBatchNorm), ("bn", "syncbn", nn.BatchNorm2d),
     ("eman", "bn", nn.BatchNorm2d)],
)
def test_norms_are_swapped_on_the_right_side(teacher_norm, student_norm, cls):
    m = tiny(teacher_norm, student_norm)
    assert type(m.teacher.encoder.bn1) is cls
    assert type(m.student.encoder.bn1) is (SyncBatchNorm if student_norm == "syncbn" else nn.BatchNorm2d)
    if teacher_norm == "mbn":  # every teacher BN, projector's BN1d included
        assert isinstance(m.teacher.projector[1], MomentumBatchNorm1d)
        assert not any(type(x) in (nn.BatchNorm1d, nn.BatchNorm2d) for x in m.teacher.modules())


def test_unknown_norms_are_refused():
    with pytest.raises(ValueError, match="teacher_norm"):
        tiny(teacher_norm="gn")
    with pytest.raises(ValueError, match="student_norm"):
        tiny(student_norm="mbn")


def test_loss_is_summed_symmetrised_and_bounded():
    p = torch.randn(5, 8)
    assert_close(symmetrised_loss(p, p, p, p), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert_close(symmetrised_loss(p, p, -p, -p), torch.tensor(8.0))  # 4 - 2(-1 - 1)
    # Orthogonal pairs: each term is 2 - 0, the sum 4 (not their average, 2).
    e = torch.eye(4)
    assert_close(symmetrised_loss(e[:2], e[:2], e[2:], e[2:]), torch.tensor(4.0))


def test_teacher_gets_no_gradient_and_student_does():
    m = tiny()
    loss = m(*views())
    loss.backward()
    assert all(p.grad is not None for p in m.student.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())


def test_mbn_history_committed_once_per_step_from_both_views():
    m = tiny("mbn")
    m.set_alpha(0.5)
    v1, v2 = views()
    bn = m.teacher.encoder.bn1
    # Expected: alpha * mean of the two views' statistics + (1 - alpha) * old history.
    x1 = m.teacher.encoder.conv1(v1).detach()
    x2 = m.teacher.encoder.conv1(v2).detach()
    (mu1, s1), (mu2, s2) = bn.batch_stats(x1), bn.batch_stats(x2)
    old = bn.running_mean.clone()
    m(v1, v2)
    assert_close(bn.running_mean, 0.5 * (mu1 + mu2) / 2 + 0.5 * old)
    assert_close(bn.running_var, 0.5 * (s1 + s2) / 2 + 0.5 * torch.ones_like(s1))
    assert bn.pending_count.item() == 0


def test_each_view_is_a_separate_student_forward():
    m = tiny("bn")
    calls = []
    m.student.encoder.bn1.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    m(*views(n=6))
    assert calls == [6, 6]


def test_update_teacher_is_ema_of_encoder_and_projector():
    m = tiny("mbn")
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    t_before = {k: v.clone() for k, v in m.teacher.named_parameters()}
    s = dict(m.student.named_parameters())
    m.update_teacher(0.9)
    for k, v in m.teacher.named_parameters():
        assert_close(v, 0.9 * t_before[k] + 0.1 * s[k])


def test_eman_teacher_runs_in_eval_mode_with_student_statistics():
    m = tiny("eman")
    m.train()
    assert m.student.training and not m.teacher.training
    m(*views())  # student BN statistics move; the teacher's only through the EMA
    assert torch.equal(m.teacher.encoder.bn1.running_mean, torch.zeros(8))
    m.update_teacher(0.0)
    assert torch.equal(m.teacher.encoder.bn1.running_mean, m.student.encoder.bn1.running_mean)


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet50", 2048)])
def test_backbones_are_torchvision_with_paper_feature_sizes(arch, dim):
    enc = resnet(arch)
    assert enc.out_dim == dim and isinstance(enc.fc, nn.Identity)
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_small_stem_and_width():
    enc = resnet("resnet18", width=32, small_stem=True)
    assert enc.conv1.kernel_size == (3, 3) and enc.conv1.stride == (1, 1)
    assert isinstance(enc.maxpool, nn.Identity)
    assert enc.out_dim == 256 and enc(torch.randn(2, 3, 16, 16)).shape == (2, 256)


def test_paper_head_sizes():
    m = build_student_teacher("resnet18", width=64)
    proj, pred = m.student.projector, m.student.predictor
    assert (proj[0].in_features, proj[0].out_features, proj[3].out_features) == (512, 512, 128)
    assert (pred[0].in_features, pred[0].out_features, pred[3].out_features) == (128, 512, 128)
    assert all(isinstance(l, nn.Linear) and l.bias is not None for l in (proj[0], proj[3], pred[0], pred[3]))
