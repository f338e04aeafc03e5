"""The strict config loader: every mistake names its dotted key and what was expected."""

import dataclasses

import pytest

import typing

from repro.config import (TEACHER_NORMS, ConfigError, DetectionConfig, FinetuneConfig, PretrainConfig, config_hash,
                          load_config, load_yaml, semantic_dict, to_dict)


def load(d):
    return load_config(d)


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
    assert "lars_rule" not in semantic_dict(a)["optim"]
    assert config_hash(load({"optim": {"optimizer": "lars", "lars_rule": "e17a948"}})) == config_hash(a)
    head = load({"optim": {"optimizer": "lars", "lars_rule": "head"}})
    assert semantic_dict(head)["optim"]["lars_rule"] == "head"
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


def _keys(cls) -> dict:
    """{section: its fields} of a task's config."""
    hints = typing.get_type_hints(cls)
    return {f.name: [g.name for g in dataclasses.fields(hints[f.name])] if dataclasses.is_dataclass(hints[f.name])
            else None for f in dataclasses.fields(cls)}


def test_each_task_config_holds_exactly_what_its_task_reads():
    assert set(_keys(PretrainConfig)) == {"task", "model", "data", "optim", "method", "train", "probe"}
    ft = _keys(FinetuneConfig)
    assert set(ft) == {"task", "model", "data", "train", "pretrained", "finetune"}  # no optim, method or probe
    assert ft["model"] == ["arch", "width", "small_stem"]  # the ResNet: no heads, no norms
    assert ft["data"] == ["dataset", "root", "image_size", "crop_scale", "hflip", "workers"]  # no two-view augmentation
    assert ft["train"] == ["seed", "threads"]
    det = _keys(DetectionConfig)
    assert set(det) == {"task", "model", "data", "train", "pretrained", "detection"}
    assert det["model"] == ft["model"] and det["data"] == ["root", "workers"]  # the dataset: detection.dataset
    assert det["train"] == ["seed", "threads", "checkpoint_every"]
    assert {type(load({"task": t})) for t in ("pretrain", "finetune", "detection")} == {
        PretrainConfig, FinetuneConfig, DetectionConfig}
    assert type(load({})) is PretrainConfig


@pytest.mark.parametrize("cls", [FinetuneConfig, DetectionConfig])
def test_a_field_a_transfer_task_shares_with_pretraining_means_the_same(cls):
    # Same type, default and place in the run id as pre-training's field of that name.
    pre, hints = typing.get_type_hints(PretrainConfig), typing.get_type_hints(cls)
    shared = 0
    for section in set(_keys(cls)) & set(_keys(PretrainConfig)) - {"task"}:
        theirs = {f.name: f for f in dataclasses.fields(pre[section])}
        types = typing.get_type_hints(pre[section])
        for f in dataclasses.fields(hints[section]):
            if f.name in theirs:
                shared += 1
                assert typing.get_type_hints(hints[section])[f.name] == types[f.name], f"{section}.{f.name}"
                assert (f.default, dict(f.metadata)) == (theirs[f.name].default, dict(theirs[f.name].metadata))
    assert shared >= 6


def test_fine_tuning_has_its_micro_batch_and_no_bn_batch_size():
    ft = load({"task": "finetune", "finetune": {"micro_batch_size": 8}})
    assert ft.finetune.micro_batch_size == 8 and not hasattr(ft.train, "bn_batch_size")
    with pytest.raises(ConfigError, match=r"train.bn_batch_size: task 'finetune' does not read this key "
                                          r"\(read by pretrain\); its own is finetune.micro_batch_size; "
                                          r"it reads .*train.seed, train.threads"):
        load({"task": "finetune", "train": {"bn_batch_size": 8}})


@pytest.mark.parametrize("task, key, readers", [
    ("finetune", "train.world_size", "pretrain"), ("finetune", "optim.lr_per_256", "pretrain"),
    ("finetune", "probe.knn_k", "pretrain"), ("finetune", "model.teacher_norm", "pretrain"),
    ("finetune", "train.checkpoint_every", "pretrain, detection"), ("detection", "data.dataset", "pretrain, finetune"),
    ("detection", "finetune.epochs", "finetune"), ("pretrain", "detection.schedule", "detection"),
    ("pretrain", "pretrained.row", "finetune, detection"),
])
def test_a_key_another_task_reads_names_the_key_the_task_and_who_reads_it(task, key, readers):
    from repro.config import undot

    value = {"model.teacher_norm": "bn", "data.dataset": "stl10", "detection.schedule": "2x",
             "pretrained.row": "r"}.get(key, 3)
    with pytest.raises(ConfigError) as e:
        load(undot({"task": task, key: value}))
    assert str(e.value).startswith(f"{key}: task '{task}' does not read this key (read by {readers}); it reads ")


def test_the_error_lists_what_the_task_reads():
    with pytest.raises(ConfigError) as e:
        load({"task": "finetune", "train": {"world_size": 2}})
    assert str(e.value) == ("train.world_size: task 'finetune' does not read this key (read by pretrain); "
                            "it reads model, data, train.seed, train.threads, pretrained, finetune")
    with pytest.raises(ConfigError, match="^finetune.epochz: unknown key; valid keys here are percent, "):
        load({"task": "finetune", "finetune": {"epochz": 2}})  # a key no task reads: a typo
    with pytest.raises(ConfigError, match="^task: expected one of 'pretrain', 'finetune', 'detection', got 'train'"):
        load({"task": "train"})


def test_a_run_id_covers_the_semantic_fields_of_its_tasks_config():
    ft = load({"task": "finetune"})
    assert config_hash(load({"task": "finetune", "finetune": {"epochs": 3}})) != config_hash(ft)
    assert config_hash(load({"task": "finetune", "finetune": {"micro_batch_size": 8}})) != config_hash(ft)
    assert config_hash(load({"task": "finetune", "data": {"workers": 4, "root": "/d"}})) == config_hash(ft)
    det = load({"task": "detection"})
    assert config_hash(load({"task": "detection", "detection": {"gpus": 8}})) != config_hash(det)
    assert config_hash(load({"task": "detection", "train": {"checkpoint_every": 9}})) == config_hash(det)
    assert len({config_hash(load({"task": t})) for t in ("pretrain", "finetune", "detection")}) == 3


def test_pretraining_hashes_what_the_one_config_of_every_task_hashed():
    # Before each task had its own config, a pre-training's id hashed exactly these keys: the
    # pre-training sections of one config that held every task's sections.
    assert set(semantic_dict(load({}))) == {"task", "model", "data", "optim", "method", "train", "probe"}
    assert config_hash(load({})) == config_hash(load({"train": {"seed": 0}})) == "89e8643930"


def test_teacher_norms_are_the_cores():
    from repro.core import model, moco

    assert set(TEACHER_NORMS) == set(model.TEACHER_NORMS) | set(moco.TEACHER_NORMS)
    for norm in TEACHER_NORMS:
        assert load({"model": {"teacher_norm": norm}}).model.teacher_norm == norm


def test_the_config_the_grid_and_a_job_load_without_torch():
    """A queued local run waits for its slot in a process that has unpickled its job (a Run and
    its config): without torch it holds tens of MB instead of half a GB, so a campaign of 54
    queued runs fits in memory (measured: 54 waiting processes would have held about 30 GB)."""
    import subprocess
    import sys

    code = ("import sys, repro.config, repro.grid, repro.launch.job, repro.rundir; "
            "repro.launch.job._distributed_env(1); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
