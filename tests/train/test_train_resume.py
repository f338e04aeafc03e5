"""Pre-training: exact resume (one and two processes), divergence, corrupt checkpoints."""

import dataclasses
import json

import pytest
import torch

from repro.train import checkpoint as ckpt
from repro.train import pretrain as train
from repro.grid import expand, load_table


def smoke_config(row="bn-mbn", world_size=1, **train_overrides):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == row)
    t = dataclasses.replace(run.config.train, world_size=world_size, **train_overrides)
    return dataclasses.replace(run.config, train=t)


def final_state(run_dir):
    return ckpt.load(ckpt.checkpoints(run_dir)[-1])


def assert_same_state(a, b):
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for ra, rb in zip(a["rank_buffers"], b["rank_buffers"]):
        for k in ra:
            assert torch.equal(ra[k], rb[k]), k


@pytest.mark.parametrize("augmentation_mode", ["per_image", "batched"])
def test_interrupted_and_resumed_run_ends_bitwise_equal(tmp_path, augmentation_mode):
    cfg = smoke_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augmentation_mode=augmentation_mode))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    summary, _ = train.pretrain(cfg, whole, progress=False)
    stopped, _ = train.pretrain(cfg, parts, stop_at_step=2, progress=False)  # mid-epoch, not on a checkpoint period
    assert stopped["steps"] == 2
    resumed, _ = train.pretrain(cfg, parts, progress=False)
    assert resumed["steps"] == summary["steps"] == 6
    assert resumed["final_loss"] == summary["final_loss"]
    assert_same_state(final_state(whole), final_state(parts))
    # The teacher's Momentum BN history was resumed too, not restarted from 0 / 1.
    state = final_state(parts)["model"]
    assert not torch.equal(state["teacher.encoder.bn1.running_var"], torch.ones_like(state["teacher.encoder.bn1.running_var"]))
    lines = [json.loads(l) for l in (parts / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4, 5, 6]


def test_a_run_resumed_after_its_last_step_reports_the_logged_loss_and_step_time(tmp_path):
    # A run stopped after its last checkpoint (killed while probing) trains nothing when resumed;
    # its summary must still carry the run's final loss and step time, not NaN and None.
    cfg = smoke_config(row="bn-bn")
    summary, _ = train.pretrain(cfg, tmp_path, progress=False)
    again, _ = train.pretrain(cfg, tmp_path, progress=False)
    assert again["steps"] == summary["steps"] == 6
    assert again["final_loss"] == summary["final_loss"] and summary["final_loss"] == summary["final_loss"]
    assert again["sec_per_iter"] == json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["sec_per_iter"]
    assert again["sec_per_iter"] is not None


def _two_process_run(rank, world_size, cfg, whole, parts):
    train.pretrain(cfg, whole, progress=False)
    train.pretrain(cfg, parts, stop_at_step=4, progress=False)
    summary, _ = train.pretrain(cfg, parts, progress=False)
    return summary["final_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("row", ["syncbn-mbn", "bn-bn"])
def test_two_process_resume_is_exact_with_per_rank_state(tmp_path, distributed, row):
    cfg = smoke_config(row, world_size=2)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    losses = distributed(_two_process_run, 2, cfg, whole, parts)
    assert losses[0] == losses[1]
    a, b = final_state(whole), final_state(parts)
    assert_same_state(a, b)
    # Each process keeps its own teacher statistics (per-GPU BN / Momentum BN history).
    key = "teacher.encoder.bn1.running_mean"
    assert not torch.equal(a["rank_buffers"][0][key], a["rank_buffers"][1][key])


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    real = train.model_from_config

    def poisoned(cfg):
        model = real(cfg)
        forward = model.forward
        model.forward = lambda v1, v2: forward(v1, v2) * float("nan")
        return model

    monkeypatch.setattr(train, "model_from_config", poisoned)
    with pytest.raises(train.TrainingDiverged, match="loss is nan at step 0"):
        train.pretrain(smoke_config(), tmp_path, progress=False)


def test_corrupt_checkpoint_is_refused_naming_the_file(tmp_path):
    cfg = smoke_config()
    train.pretrain(cfg, tmp_path, stop_at_step=3, progress=False)
    latest = ckpt.checkpoints(tmp_path)[-1]
    latest.write_bytes(latest.read_bytes()[:100])  # truncated by a crash
    with pytest.raises(ckpt.CheckpointError) as e:
        train.pretrain(cfg, tmp_path, progress=False)
    msg = str(e.value)
    assert str(latest) in msg and "Delete it to resume from the previous checkpoint" in msg and "\n" not in msg


def test_checkpoints_hold_only_safe_types_and_are_pruned(tmp_path):
    train.pretrain(smoke_config(checkpoint_every=1), tmp_path, progress=False)
    found = ckpt.checkpoints(tmp_path)
    assert [p.name for p in found] == ["step_00000005.pt", "step_00000006.pt"]
    torch.load(found[-1], weights_only=True)  # raises if anything but tensors and plain data
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


@pytest.mark.parametrize("exclude", [False, True])
def test_lars_exclude_wd_reaches_the_excluded_group(exclude):
    """optim.lars_exclude_wd, under that one name, decides the BN / bias weight decay of LARS."""
    from repro.core.lars import LARS
    from repro.models.backbones import model_from_config

    cfg = smoke_config()
    o = dataclasses.replace(cfg.optim, optimizer="lars", weight_decay=1e-6, lars_exclude_wd=exclude)
    cfg = dataclasses.replace(cfg, optim=o)
    opt = train.build_optimizer(model_from_config(cfg), cfg)
    assert isinstance(opt, LARS)
    assert [g["lars_adapt"] for g in opt.param_groups] == [True, False]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0 if exclude else 1e-6]


def test_a_compiled_student_trains_like_the_eager_one_and_keeps_its_checkpoint_names(tmp_path):
    # train.compile: torch.compile of the student, in place. The loop must still run (the EMA
    # pairs teacher and student parameters by name), its checkpoints must load into an eager
    # model, and its numbers differ from eager ones only by the compiler's float rounding.
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    eager_dir.mkdir(), compiled_dir.mkdir()
    eager, _ = train.pretrain(smoke_config(max_steps=3), eager_dir, progress=False)
    compiled, _ = train.pretrain(smoke_config(max_steps=3, compile=True), compiled_dir, progress=False)
    assert compiled["steps"] == eager["steps"] == 3
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-3)
    a, b = final_state(eager_dir)["model"], final_state(compiled_dir)["model"]
    assert a.keys() == b.keys() and not [k for k in b if "_orig_mod" in k]
    floats = [k for k in a if a[k].is_floating_point()]
    gap = torch.cat([(a[k] - b[k]).flatten() for k in floats]).norm()
    assert gap <= 1e-3 * torch.cat([a[k].flatten() for k in floats]).norm()  # measured: 1.1e-4
