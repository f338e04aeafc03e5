"""The strict config loader: every mistake names its dotted key and what was expected."""

import dataclasses

import pytest

from repro.config import (TASK_SECTIONS, TEACHER_NORMS, ConfigError, RunConfig, config_hash, from_dict, load_yaml,
                          run_semantics, to_dict)


def load(d):
    return from_dict(RunConfig, d)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"model": {"teacher_nrom": "mbn"}}, "model.teacher_nrom: unknown key; valid keys here are arch,"),
        ({"modle": {}}, "modle: unknown key"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected a number, got 'ten'"),
        ({"model": {"teacher_norm": "gn"}}, "model.teacher_norm: expected one of 'bn', 'syncbn', 'mbn', 'eman'"),
        ({"data": {"crop_scale": [0.1]}}, "data.crop_scale: expected a list of a number, a number"),
        ({"model": {"small_stem": 1}}, "model.small_stem: expected true/false, got 1"),
        ({"train": {"world_size": 2.0}}, "train.world_size: expected an integer"),
        # YAML 1.1 reads 1e-4 (no dot) as a string: caught, not silently used.
        ({"optim": {"weight_decay": "1e-4"}}, "optim.weight_decay: expected a number, got '1e-4'"),
        ({"train": "fast"}, "train: expected a mapping"),
    ],
)
def test_errors_name_the_key_and_the_expectation(data, message):
    with pytest.raises(ConfigError) as e:
        load(data)
    assert message in str(e.value)


def test_values_convert_and_round_trip():
    cfg = load({"data": {"crop_scale": [0.25, 1]}, "optim": {"lr_per_256": 1}, "method": {"fixed_alpha": None}})
    assert cfg.data.crop_scale == (0.25, 1.0) and isinstance(cfg.optim.lr_per_256, float)
    assert load(to_dict(cfg)) == cfg
    assert cfg.train.global_batch_size == cfg.train.bn_batch_size * cfg.train.world_size


def test_run_hash_is_stable_and_ignores_non_semantic_fields():
    a = load({"train": {"epochs": 5}})
    assert config_hash(a) == config_hash(load({"train": {"epochs": 5.0}}))
    assert config_hash(a) != config_hash(load({"train": {"epochs": 6}}))
    moved = dataclasses.replace(a, data=dataclasses.replace(a.data, root="/elsewhere", workers=7))
    assert config_hash(moved) == config_hash(a)


def test_fields_added_later_enter_the_hash_only_off_their_default():
    # optim.lars_rule came after run ids were published: at its default ("e17a948", the
    # behaviour before it existed) it is absent from the hashed dict, so old ids stay valid.
    a = load({"optim": {"optimizer": "lars"}})
    assert "lars_rule" not in run_semantics(a)["optim"]
    assert config_hash(load({"optim": {"optimizer": "lars", "lars_rule": "e17a948"}})) == config_hash(a)
    head = load({"optim": {"optimizer": "lars", "lars_rule": "head"}})
    assert run_semantics(head)["optim"]["lars_rule"] == "head"
    assert config_hash(head) != config_hash(a)


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")


def test_yaml_is_parsed_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_yaml(evil)


def test_a_run_id_covers_only_the_sections_its_task_reads():
    base = load({})
    assert config_hash(load({"detection": {"schedule": "2x"}})) == config_hash(base)
    assert config_hash(load({"finetune": {"epochs": 3}})) == config_hash(base)
    ft = load({"task": "finetune"})
    assert config_hash(load({"task": "finetune", "finetune": {"epochs": 3}})) != config_hash(ft)
    assert config_hash(load({"task": "finetune", "probe": {"knn_k": 5}})) == config_hash(ft)



def test_task_sections_come_from_the_run_config_fields():
    # The sections whose semantic fields each task's run ids have always covered.
    assert {k: set(v) for k, v in TASK_SECTIONS.items()} == {
        "pretrain": {"task", "model", "data", "optim", "method", "train", "probe"},
        "finetune": {"task", "model", "data", "train", "pretrained", "finetune"},
        "detection": {"task", "model", "train", "pretrained", "detection"},
    }


def test_teacher_norms_are_the_cores():
    from repro.core import model, moco

    assert set(TEACHER_NORMS) == set(model.TEACHER_NORMS) | set(moco.TEACHER_NORMS)
    for norm in TEACHER_NORMS:
        assert load({"model": {"teacher_norm": norm}}).model.teacher_norm == norm


def test_the_config_the_grid_and_a_job_load_without_torch():
    """A queued local run waits for its slot in a process that has unpickled its job (a Run and
    its RunConfig): without torch it holds tens of MB instead of half a GB, so a campaign of 54
    queued runs fits in memory (measured: 54 waiting processes would have held about 30 GB)."""
    import subprocess
    import sys

    code = ("import sys, repro.config, repro.grid, repro.launch.job, repro.rundir; "
            "repro.launch.job._distributed_env(1); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
