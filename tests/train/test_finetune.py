"""Table 12's fine-tuning: the smoke run end to end, exact resume, BN re-estimation."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from repro.train import checkpoint as ckpt
from repro.models.backbones import resnet
from repro.train.finetune import _epoch_chunks, reestimate_bn, run_finetune
from repro.grid import expand, load_table
from repro.transfer.pretrained import resolve_backbone

CPU = torch.device("cpu")


def _table_run(table, profile, row):
    return next(r for r in expand(load_table(table), profile) if r.row == row)


def _with(cfg, **finetune):
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, **finetune))


@pytest.fixture(scope="module")
def runs_root(pretrained_runs_root):
    """t08 --profile smoke ours-300 pre-trained in this process, one process, with final.json."""
    return pretrained_runs_root


def test_table12_smoke_run_end_to_end(runs_root, tmp_path):
    run = _table_run("t12", "smoke", "ours-300-10pct")
    backbone = resolve_backbone(run.config, runs_root)
    out = run_finetune(run.config, tmp_path / "ft", backbone, CPU)
    # The digits' 10%: 14 or 15 of each class (145 of the 1,442 training images); tested on the held-out fifth.
    assert (out["train_samples"], out["test_samples"], out["percent"]) == (145, 355, 10)
    assert (out["batch_size"], out["micro_batch_size"], out["epochs"], out["steps"]) == (16, 8, 2, 2 * (145 // 16))
    assert out["lr"] == pytest.approx(0.05) and out["bn_reestimate_batches"] == 4
    assert 0.0 <= out["top1"] <= out["top5"] <= 100.0
    assert [json.loads(l)["epoch"] for l in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # The whole network was fine-tuned, starting from the pre-trained backbone.
    final = ckpt.load(ckpt.checkpoints(tmp_path / "ft")[-1])["model"]
    assert not torch.equal(final["encoder.conv1.weight"], backbone["conv1.weight"])
    assert final["head.weight"].shape == (10, 64)


def test_a_subset_smaller_than_the_batch_takes_it_whole_and_scales_the_lr(runs_root, tmp_path):
    cfg = _table_run("t12", "smoke", "ours-300-1pct").config  # digits 1%: one image per class
    out = run_finetune(_with(cfg, epochs=1), tmp_path, resolve_backbone(cfg, runs_root), CPU)
    assert (out["train_samples"], out["batch_size"], out["steps"]) == (10, 10, 1)
    assert out["lr"] == pytest.approx(0.05 * 10 / 16)


def test_the_micro_batch_is_finetune_micro_batch_size(tmp_path):
    cfg = _with(_table_run("t12", "smoke", "ours-300-1pct").config, epochs=1, micro_batch_size=4,
                bn_reestimate_batches=1)
    torch.manual_seed(1)
    backbone = resnet("resnet18", width=8, small_stem=True).state_dict()
    out = run_finetune(cfg, tmp_path, backbone, CPU)
    assert (out["batch_size"], out["micro_batch_size"]) == (10, 4)  # the 1% subset: 10 images, in 4 + 4 + 2


def _final(run_dir):
    return ckpt.load(ckpt.checkpoints(run_dir)[-1])


def test_interrupted_and_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path):
    cfg = _with(_table_run("t12", "smoke", "ours-300-10pct").config, epochs=3)
    torch.manual_seed(1)
    backbone = resnet("resnet18", width=8, small_stem=True).state_dict()
    whole = run_finetune(cfg, tmp_path / "whole", backbone, CPU)
    stopped = run_finetune(cfg, tmp_path / "parts", backbone, CPU, stop_after_epoch=1)
    assert stopped == {"stopped_at_epoch": 1, "steps": 9}
    resumed = run_finetune(cfg, tmp_path / "parts", backbone, CPU)
    a, b = _final(tmp_path / "whole"), _final(tmp_path / "parts")
    assert a["step"] == b["step"] == 27
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (resumed["top1"], resumed["top5"], resumed["final_loss"]) == (whole["top1"], whole["top5"], whole["final_loss"])
    assert not list((tmp_path / "parts" / "checkpoints").glob("*.tmp"))


def test_epoch_chunks_are_seeded_full_batches_cut_into_micro_batches():
    steps = _epoch_chunks(23, 8, 3, seed=0, epoch=0)
    assert len(steps) == 2 and [len(c) for c in steps[0]] == [3, 3, 2]
    flat = [i for s in steps for c in s for i in c]
    assert len(set(flat)) == 16 and set(flat) <= set(range(23))  # the 7 left over are dropped
    assert steps == _epoch_chunks(23, 8, 3, seed=0, epoch=0) != _epoch_chunks(23, 8, 3, seed=0, epoch=1)


def test_bn_reestimation_is_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1), nn.ReLU())
    model[1].running_mean.fill_(5.0)  # stale statistics from training
    batches = [torch.randn(6, 3, 8, 8) * (i + 1) + i for i in range(5)]
    used = reestimate_bn(model, iter(batches), num_batches=3)
    assert used == 3 and not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        feats = [model[0](x) for x in batches[:3]]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, means)
    torch.testing.assert_close(model[1].running_var, variances)
