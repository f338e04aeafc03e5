"""Tests for repro/transfer/export.py (SPEC section 4, Detection)."""

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from repro.transfer import export
from repro.transfer.export import (
    backbone_state_dict,
    export_checkpoint,
    save_detectron2,
    to_detectron2,
)

HEAD_KEYS = (
    "student.projector.0.weight",
    "student.projector.1.running_mean",
    "student.predictor.0.weight",
    "teacher.projector.0.weight",
)


def _backbone(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = torch.nn.Identity()
    return model


def _fake_checkpoint_state(student, teacher):
    """A pre-training model state: prefixed encoders, heads, Momentum BN extras in the teacher."""
    state = {f"student.encoder.{k}": v for k, v in student.state_dict().items()}
    for k, v in teacher.state_dict().items():
        state[f"teacher.encoder.{k}"] = v
    # Momentum BN buffers that are training-time state only (SPEC section 1).
    state["teacher.encoder.bn1.alpha"] = torch.tensor(0.5)
    state["teacher.encoder.layer1.0.bn1.pending_mean"] = torch.zeros(64)
    state["teacher.encoder.layer1.0.bn1.pending_var"] = torch.ones(64)
    for key in HEAD_KEYS:
        state[key] = torch.randn(4, 4)
    return state


@pytest.fixture(scope="module")
def resnet50_pair():
    student = _backbone("resnet50")
    teacher = _backbone("resnet50")
    with torch.no_grad():  # make the two distinguishable everywhere, buffers included
        for t in teacher.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
    return student, teacher


@pytest.fixture(scope="module")
def resnet50_export(resnet50_pair):
    student, teacher = resnet50_pair
    state = _fake_checkpoint_state(student, teacher)
    backbone = backbone_state_dict(state, which="teacher")
    return state, backbone, to_detectron2(backbone)


def test_backbone_is_the_teacher_and_loads_strictly(resnet50_pair, resnet50_export):
    _, teacher = resnet50_pair
    _, backbone, _ = resnet50_export
    assert set(backbone) == set(teacher.state_dict())
    for key, value in teacher.state_dict().items():
        assert torch.equal(backbone[key], value), key
    model = torchvision.models.resnet50()
    model.fc = torch.nn.Identity()
    model.load_state_dict(backbone)  # strict


def test_student_is_selectable(resnet50_pair, resnet50_export):
    student, _ = resnet50_pair
    state, _, _ = resnet50_export
    backbone = backbone_state_dict(state, which="student")
    key = "layer2.1.conv2.weight"
    assert torch.equal(backbone[key], student.state_dict()[key])


def test_heads_and_momentum_bn_extras_are_dropped(resnet50_export):
    _, backbone, d2 = resnet50_export
    assert not any("alpha" in k or "pending" in k or k.startswith("fc.") for k in backbone)
    names = list(d2["model"])
    assert not any("projector" in k or "predictor" in k or "alpha" in k for k in names)


def test_every_backbone_key_mapped_once_with_identical_values(resnet50_export):
    _, backbone, d2 = resnet50_export
    model = d2["model"]
    kept = [k for k in backbone if not k.endswith("num_batches_tracked")]
    # resnet50: 320 state-dict keys = 265 backbone tensors + 53 BN counters + fc.weight/bias.
    assert len(kept) == 265
    assert len(model) == len(kept) == len(set(model))
    for name in model:
        assert isinstance(model[name], np.ndarray)
    # One-to-one: each torchvision tensor reappears exactly once, unchanged.
    renamed = {key: export._detectron2_name(key) for key in kept}
    assert sorted(renamed.values()) == sorted(model)
    for key, name in renamed.items():
        assert np.array_equal(model[name], backbone[key].numpy()), key


@pytest.mark.parametrize(
    ("torchvision_name", "detectron2_name"),
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.weight", "stem.conv1.norm.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
        ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight"),
        ("layer1.0.downsample.1.running_var", "res2.0.shortcut.norm.running_var"),
        ("layer3.5.bn2.running_mean", "res4.5.conv2.norm.running_mean"),
        ("layer4.2.bn3.bias", "res5.2.conv3.norm.bias"),
        ("layer4.2.conv3.weight", "res5.2.conv3.weight"),
    ],
)
def test_exact_renamings(resnet50_export, torchvision_name, detectron2_name):
    _, backbone, d2 = resnet50_export
    assert np.array_equal(d2["model"][detectron2_name], backbone[torchvision_name].numpy())


def test_detectron2_metadata(resnet50_export):
    _, _, d2 = resnet50_export
    assert d2["__author__"] == "repro-momentum2"
    assert d2["matching_heuristics"] is True
    assert not any(k.endswith("num_batches_tracked") for k in d2["model"])


def test_resnet18_basic_blocks():
    model = _backbone("resnet18")
    state = _fake_checkpoint_state(model, model)
    backbone = backbone_state_dict(state)
    d2 = to_detectron2(backbone)["model"]
    assert "res3.1.conv2.norm.weight" in d2
    assert "res3.0.shortcut.norm.running_mean" in d2
    assert not any("conv3" in k for k in d2)
    assert len(d2) == sum(not k.endswith("num_batches_tracked") for k in backbone)
    fresh = torchvision.models.resnet18()
    fresh.fc = torch.nn.Identity()
    fresh.load_state_dict(backbone)


def test_missing_prefix_is_named():
    with pytest.raises(ValueError, match=r"teacher\.encoder\."):
        backbone_state_dict({"student.encoder.conv1.weight": torch.zeros(1)}, which="teacher")


def test_missing_num_batches_tracked_is_filled():
    # A Momentum BN without a batch counter still gives a strictly loadable torchvision dict.
    model = _backbone("resnet18")
    state = {
        f"teacher.encoder.{k}": v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    backbone = backbone_state_dict(state)
    fresh = torchvision.models.resnet18()
    fresh.fc = torch.nn.Identity()
    fresh.load_state_dict(backbone)


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="layer1.0.se.weight"):
        to_detectron2({"layer1.0.se.weight": torch.zeros(1)})


def test_full_classifier_drops_fc():
    sd = {"conv1.weight": torch.zeros(2), "fc.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}
    assert list(to_detectron2(sd)["model"]) == ["stem.conv1.weight"]


def test_save_detectron2_round_trips_and_leaves_no_temp(tmp_path, resnet50_export):
    _, _, d2 = resnet50_export
    path = save_detectron2(d2, tmp_path / "w.pkl")
    with open(path, "rb") as f:
        loaded = pickle.load(f, encoding="latin1")  # as detectron2 reads it
    assert loaded["__author__"] == "repro-momentum2"
    assert loaded["matching_heuristics"] is True
    assert loaded["model"].keys() == d2["model"].keys()
    name = "res5.2.conv3.weight"
    assert np.array_equal(loaded["model"][name], d2["model"][name])
    assert os.listdir(tmp_path) == ["w.pkl"]


def test_save_detectron2_refuses_other_extensions(tmp_path):
    with pytest.raises(ValueError, match=r"\.pkl"):
        save_detectron2({"model": {}, "__author__": "x"}, tmp_path / "w.pth")
    assert not os.listdir(tmp_path)


def test_export_checkpoint_end_to_end(tmp_path):
    model = _backbone("resnet18")
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": _fake_checkpoint_state(model, model), "step": 7}, ckpt)
    tv_path, d2_path = export_checkpoint(ckpt, tmp_path / "out")
    assert tv_path.name == "backbone_torchvision.pth" and d2_path.name == "backbone_detectron2.pkl"
    assert sorted(os.listdir(tmp_path / "out")) == sorted([tv_path.name, d2_path.name])
    fresh = torchvision.models.resnet18()
    fresh.fc = torch.nn.Identity()
    fresh.load_state_dict(torch.load(tv_path, weights_only=True))
    with open(d2_path, "rb") as f:
        assert "stem.conv1.weight" in pickle.load(f)["model"]


def test_export_checkpoint_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pth") as info:
        export_checkpoint(bad, tmp_path / "out")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [{"state_dict": {}}, [1, 2, 3]])
def test_export_checkpoint_wrong_content(tmp_path, content):
    wrong = tmp_path / "wrong.pth"
    torch.save(content, wrong)
    with pytest.raises(ValueError, match="wrong.pth.*'model'"):
        export_checkpoint(wrong, tmp_path / "out")


def test_export_checkpoint_without_teacher_names_file_and_prefix(tmp_path):
    ckpt = tmp_path / "student_only.pth"
    torch.save({"model": {"student.encoder.conv1.weight": torch.zeros(1)}}, ckpt)
    with pytest.raises(ValueError, match=r"student_only.pth.*teacher\.encoder\."):
        export_checkpoint(ckpt, tmp_path / "out")
