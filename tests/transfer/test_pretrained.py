"""resolve_backbone: a pre-training run of this suite or an explicit file -> torchvision weights."""

import dataclasses
import json
import shutil

import pytest
import torch

from repro.models.backbones import resnet
from repro.train.checkpoint import checkpoints, final_record, sha256
from repro.config import ConfigError
from repro.grid import expand, load_table
from repro.transfer.export import backbone_state_dict
from repro.transfer.pretrained import resolve_backbone


def _table_run(table, profile, row):
    return next(r for r in expand(load_table(table), profile) if r.row == row)


@pytest.fixture(scope="module")
def runs_root(pretrained_runs_root):
    """t08 --profile smoke ours-300 pre-trained in this process (one process instead of the
    table's two: the files are the same kind), finished with a final.json."""
    return pretrained_runs_root


def _finetune_cfg(**pretrained):
    cfg = _table_run("t12", "smoke", "ours-300-10pct").config
    return dataclasses.replace(cfg, pretrained=dataclasses.replace(cfg.pretrained, **pretrained))


def _teacher(runs_root, which="teacher"):
    run_dir = _table_run("t08", "smoke", "ours-300").run_dir(runs_root)
    state = torch.load(checkpoints(run_dir)[-1], weights_only=True)["model"]
    return backbone_state_dict(state, which=which)


def test_run_resolves_to_the_teacher_of_the_latest_checkpoint(runs_root):
    cfg = _finetune_cfg()
    got = resolve_backbone(cfg, runs_root)
    expected = _teacher(runs_root)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    resnet("resnet18", width=8, small_stem=True).load_state_dict(got, strict=True)
    student = resolve_backbone(_finetune_cfg(which="student"), runs_root)
    assert not torch.equal(student["bn1.running_var"], got["bn1.running_var"])  # Momentum BN history vs BN


def test_unfinished_run_says_how_to_pretrain(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_backbone(_finetune_cfg(), tmp_path)
    message = str(e.value)
    assert "pre-train it first: python -m repro run t08 --profile smoke" in message and "\n" not in message


def test_user_mistakes_are_one_line_config_errors(runs_root, tmp_path):
    cases = [
        (_finetune_cfg(row="ours-2000"), "no runnable row 'ours-2000'"),
        (_finetune_cfg(seed=3), "has seeds [0], not 3"),
        (_finetune_cfg(table=None), "pretrained.table"),
        (_finetune_cfg(table="t99"), "unknown table"),
        (_finetune_cfg(path=str(tmp_path / "missing.pth")), "no such file"),
    ]
    wide = _finetune_cfg()
    cases.append((dataclasses.replace(wide, model=dataclasses.replace(wide.model, width=16)), "not the pre-trained one"))
    for cfg, needle in cases:
        with pytest.raises(ConfigError, match=None) as e:
            resolve_backbone(cfg, runs_root)
        assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_paths_torchvision_state_dict_and_our_checkpoint(runs_root, tmp_path):
    # A torchvision classifier's state dict (fc included, as torchvision's own weights are).
    net = resnet("resnet18", width=8, small_stem=True)
    net.fc = torch.nn.Linear(net.out_dim, 10)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    got = resolve_backbone(_finetune_cfg(path=str(tmp_path / "tv.pth")), runs_root)
    assert not any(k.startswith("fc.") for k in got) and torch.equal(got["conv1.weight"], net.conv1.weight)
    # One of our checkpoints: its teacher.
    run_dir = _table_run("t08", "smoke", "ours-300").run_dir(runs_root)
    got = resolve_backbone(_finetune_cfg(path=str(checkpoints(run_dir)[-1])), runs_root)
    assert torch.equal(got["layer4.1.bn2.running_mean"], _teacher(runs_root)["layer4.1.bn2.running_mean"])
    # A ResNet of another shape, a Detectron2 file, a non-torch file.
    torch.save(resnet("resnet18").state_dict(), tmp_path / "r18.pth")
    (tmp_path / "w.pkl").write_bytes(b"x")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    for name, needle in (("r18.pth", "does not fit"), ("w.pkl", "Detectron2 weight file"), ("notes.pth", "weights-only")):
        with pytest.raises(ConfigError) as e:
            resolve_backbone(_finetune_cfg(path=str(tmp_path / name)), runs_root)
        assert needle in str(e.value) and "\n" not in str(e.value)


def _finished_with_record(runs_root, tmp_path):
    """A copy of the t08 smoke run whose final.json records its final checkpoint, as
    repro.tasks.pretrain writes it (checkpoint.final_record)."""
    run = _table_run("t08", "smoke", "ours-300")
    root = tmp_path / "runs"
    shutil.copytree(run.run_dir(runs_root), run.run_dir(root))
    run_dir = run.run_dir(root)
    record = final_record(run_dir)
    assert record["final_checkpoint_sha256"] == sha256(run_dir / record["final_checkpoint"])
    assert (run_dir / record["final_checkpoint"]) == checkpoints(run_dir)[-1]
    final = json.loads((run_dir / "final.json").read_text())
    (run_dir / "final.json").write_text(json.dumps({**final, **record}))
    return root, run_dir


def test_the_final_checkpoint_is_verified_before_export(runs_root, tmp_path):
    root, run_dir = _finished_with_record(runs_root, tmp_path)
    got = resolve_backbone(_finetune_cfg(), root)
    assert torch.equal(got["conv1.weight"], _teacher(runs_root)["conv1.weight"])
    # The file changed after the run finished (still a valid checkpoint): refused, one line.
    latest = checkpoints(run_dir)[-1]
    original = latest.read_bytes()
    state = torch.load(latest, weights_only=True)
    state["model"]["teacher.encoder.conv1.weight"].add_(1.0)
    torch.save(state, latest)
    with pytest.raises(ConfigError) as e:
        resolve_backbone(_finetune_cfg(), root)
    message = str(e.value)
    assert "\n" not in message, message
    assert str(latest) in message and "changed after the run finished" in message
    assert f"remove {run_dir} and pre-train it again" in message
    # A checkpoint newer than the one the run finished with: refused too.
    latest.write_bytes(original)
    shutil.copy(latest, latest.with_name("step_99999999.pt"))
    with pytest.raises(ConfigError) as e:
        resolve_backbone(_finetune_cfg(), root)
    assert "is not the checkpoint the run finished with" in str(e.value) and "\n" not in str(e.value)


def test_a_final_json_without_the_record_is_accepted_unchecked(runs_root):
    """Runs finished before final.json recorded the checkpoint (results/cpu): no check."""
    run_dir = _table_run("t08", "smoke", "ours-300").run_dir(runs_root)
    assert "final_checkpoint_sha256" not in json.loads((run_dir / "final.json").read_text())
    assert resolve_backbone(_finetune_cfg(), runs_root).keys() == _teacher(runs_root).keys()
