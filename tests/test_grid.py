"""Table files: paper values transcribed correctly, expansion pure and stable, bad files refused."""

import pytest

from repro.cli import main
from repro.config import ConfigError
from repro.grid import expand, load_table

# Table 1 of the paper (row 5's top-1 from Section 3.2: "88.18 vs 87.8").
PAPER_T1 = {
    "syncbn-syncbn": ("syncbn", "syncbn", 88.06, 1.1),
    "bn-syncbn": ("bn", "syncbn", 87.80, 0.39),
    "syncbn-bn": ("syncbn", "bn", 87.12, 0.49),
    "bn-bn": ("bn", "bn", 84.16, 0.24),
    "bn-mbn": ("bn", "mbn", 88.18, 0.25),
    "syncbn-mbn": ("syncbn", "mbn", 88.25, 0.50),
}


def test_table1_rows_and_paper_values():
    t = load_table("t01")
    # the control, and the Momentum BN rows at the paper's biased variance, run at CPU scale only
    assert [r.id for r in t.rows] == list(PAPER_T1) + ["random-init", "bn-mbn-biased", "syncbn-mbn-biased"]
    for row in t.rows[:len(PAPER_T1)]:
        student, teacher, top1, spi = PAPER_T1[row.id]
        assert row.paper == {"top1": top1, "sec_per_iter": spi}
        assert row.set == {"model.student_norm": student, "model.teacher_norm": teacher}
    assert set(t.profiles) == {"paper", "paper-1x64", "paper-8x8", "local", "cpu", "cpu-mnist", "cpu-8x4",
                               "cpu-mnist-bf16", "smoke"}


def test_paper_profile_is_the_papers_protocol():
    run = expand(load_table("t01"), "paper")[0]
    c = run.config
    assert (c.data.dataset, c.data.image_size, c.model.arch, c.model.width, c.model.small_stem) == ("stl10", 96, "resnet18", 64, False)
    assert (c.train.epochs, c.train.bn_batch_size, c.train.world_size, c.train.global_batch_size) == (400, 32, 64, 2048)
    assert (c.optim.lr_per_256, c.optim.weight_decay, c.optim.warmup_epochs, c.optim.warmup_start) == (0.1, 1e-4, 10, "paper")
    assert c.peak_lr == pytest.approx(0.8)
    assert c.method.m_base == 0.032 and c.method.alpha_base == 1.0
    assert (c.probe.linear_epochs, c.probe.linear_lr_per_256, c.probe.augment) == (80, 0.5, True)


def test_expansion_is_stable_and_ids_unique():
    t = load_table("t01")
    a, b = expand(t, "local"), expand(t, "local")
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == 7  # the six rows and the random-init control
    trained = [r for r in a if r.row != "random-init"]
    assert {(r.config.model.student_norm, r.config.model.teacher_norm) for r in trained} == {v[:2] for v in PAPER_T1.values()}
    # The paper's BN ratio in one process: BN over one emulated device, Synced BN over all of them
    assert all((r.config.train.world_size, r.config.train.devices, r.config.train.bn_batch_size) == (1, 8, 4) for r in a)


def test_table4_at_the_emulated_device_design_varies_the_device_batch_at_a_fixed_device_count():
    """The paper's Table 4 design at cpu-8x4: 8 devices, each device's batch (what BN sees) 2
    to 16, lr linear in the global batch and m_base by the equivalence rule from batch 32; the
    same epochs, so fewer steps at larger batches."""
    runs = [r for r in expand(load_table("t04"), "cpu-8x4") if r.seed == 0 and r.row != "random-init"]
    by_row = {r.row: r.config for r in runs}
    assert sorted(by_row) == sorted(f"{m}-{b}" for m in ("byol", "ours") for b in (2, 4, 8, 16))
    for row, cfg in by_row.items():
        method, bn = row.rsplit("-", 1)
        assert cfg.model.teacher_norm == {"byol": "bn", "ours": "mbn"}[method]
        assert (cfg.train.devices, cfg.train.world_size, cfg.train.bn_batch_size) == (8, 1, int(bn))
        assert cfg.peak_lr == pytest.approx(0.1 * 8 * int(bn) / 256)
        assert cfg.m_base == pytest.approx(0.02 * 8 * int(bn) / 32)
        assert cfg.train.epochs == 30
    assert {r.seed for r in expand(load_table("t04"), "cpu-8x4")} == {0, 1, 2, 3}
    assert {r.seed for r in expand(load_table("t06"), "cpu-8x4")} == {0, 1, 2, 3, 4}


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'huge' for table t01; choose one of paper, paper-1x64, paper-8x8, local, cpu, smoke"):
        expand(load_table("t01"), "huge")


def _table(tmp_path, text):
    p = tmp_path / "t99_bad.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t99
title: test
source: none
columns: {top1: {label: Top-1}}
rows:
  - {id: a, label: A, set: {model.teacher_norm: mbn}, paper: {top1: 1.0}}
profiles:
  smoke: {description: x, base: {train: {epochs: 1}}}
"""


def test_a_good_table_file_loads(tmp_path):
    assert load_table(_table(tmp_path, GOOD)).rows[0].id == "a"


@pytest.mark.parametrize(
    "edit,message",
    [
        (("model.teacher_norm: mbn", "model.teacher_norm: xbn"), "profile smoke, row a: model.teacher_norm: expected one of"),
        (("{train: {epochs: 1}}", "{train: {epoch: 1}}"), "profile smoke, row a: train.epoch: unknown key"),
        (("paper: {top1: 1.0}", "paper: {top2: 1.0}"), "rows.a.paper.top2: not a column"),
        (("title: test", "titel: test"), "titel: unknown key"),
        (("rows:", "rows: ["), "is not valid YAML"),
        # A key the run's task does not read is an error naming the key and the task.
        (("{train: {epochs: 1}}", "{task: finetune, probe: {knn_k: 5}}"),
         "profile smoke, row a: probe.knn_k: task 'finetune' does not read this key"),
        (("{train: {epochs: 1}}", "{task: detection, data: {dataset: stl10}}"),
         "data.dataset: task 'detection' does not read this key (read by pretrain, finetune); it reads model, "
         "data.root, data.workers, train, pretrained, detection"),
        (("{train: {epochs: 1}}", "{task: finetune, train: {world_size: 2}}"),
         "profile smoke, row a: train.world_size: task 'finetune' does not read this key (read by pretrain); "
         "it reads model, data, train.seed, train.threads, pretrained, finetune"),
        (("{train: {epochs: 1}}", "{task: finetune, optim: {lr_per_256: 1.0}}"),
         "profile smoke, row a: optim.lr_per_256: task 'finetune' does not read this key (read by pretrain)"),
        (("{train: {epochs: 1}}", "{task: finetune, train: {bn_batch_size: 8}}"),
         "profile smoke, row a: train.bn_batch_size: task 'finetune' does not read this key (read by pretrain)"),
    ],
)
def test_malformed_table_files_name_the_problem(tmp_path, edit, message):
    path = _table(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as e:
        load_table(path)
    assert message in str(e.value) and "t99_bad.yaml" in str(e.value)


def test_cli_reports_bad_input_in_one_line_without_traceback(tmp_path, capsys):
    path = _table(tmp_path, GOOD.replace("epochs: 1", "epochs: many"))
    assert main(["run", str(path), "--profile", "smoke", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "train.epochs: expected a number" in err
    assert main(["run", "t01", "--profile", "nope", "--runs", str(tmp_path / "runs")]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert main(["run", "t77", "--runs", str(tmp_path / "runs")]) == 2
    assert "unknown table 't77'; known tables: t01" in capsys.readouterr().err


def test_cli_missing_stl10_root_is_a_clear_error(tmp_path, capsys):
    args = ["run", "t01", "--profile", "paper", "--runs", str(tmp_path / "runs")]
    assert main(args) == 2
    assert "dataset 'stl10' needs a root folder: pass --data-root" in capsys.readouterr().err
    assert main(args + ["--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "STL10" in err and "nowhere" in err and err.count("\n") == 1


def test_a_profile_may_run_a_subset_of_rows():
    t04 = load_table("t04")
    cpu = {r.row for r in expand(t04, "cpu")}
    assert cpu == {"byol-16", "byol-32", "byol-64", "byol-128", "ours-16", "ours-32", "ours-64", "ours-128",
                   "random-init"}
    # the paper did not run BYOL at BN 16 or 32: its profile leaves them out
    assert {r.row for r in expand(t04, "paper")} == {"byol-64", "byol-128", "byol-256", "byol-512", "ours-16",
                                                     "ours-32", "ours-48", "ours-64", "ours-128"}


def test_only_names_rows_of_the_table(tmp_path):
    p = _table(tmp_path, T99_WITH_ONLY)
    with pytest.raises(ConfigError, match=r"profiles.p.only: 'nope' is not a row id \(a\)"):
        load_table(p)


T99_WITH_ONLY = GOOD.replace("smoke: {description: x, base: {train: {epochs: 1}}}", "p: {only: [nope], base: {}}")


def test_a_transfer_profile_takes_from_a_shared_profile_only_what_its_task_reads(tmp_path):
    # cpu-smoke sets optim, method, probe and data.dataset: detection reads none of them.
    text = GOOD.replace("smoke: {description: x, base: {train: {epochs: 1}}}",
                        "smoke: {extends: cpu-smoke, base: {task: detection, data: {root: /d}}}")
    text = text.replace("set: {model.teacher_norm: mbn}", "set: {}")
    (run,) = expand(load_table(_table(tmp_path, text)), "smoke")
    assert run.config.task == "detection" and run.config.data.root == "/d"
    assert run.config.data.workers == 0 and run.config.train.checkpoint_every == 2  # cpu-smoke's, read by detection
    assert run.config.model.width == 8 and not hasattr(run.config, "probe")  # cpu-smoke's probe settings left behind


def test_fine_tuning_does_not_inherit_the_pretraining_batch_as_its_micro_batch(tmp_path):
    # cpu-smoke's train.bn_batch_size (8) is pre-training's per-device batch: fine-tuning's
    # micro-batch is its own field, at its default unless the profile sets it.
    text = GOOD.replace("smoke: {description: x, base: {train: {epochs: 1}}}",
                        "smoke: {extends: cpu-smoke, base: {task: finetune}}")
    text = text.replace("set: {model.teacher_norm: mbn}", "set: {}")
    (run,) = expand(load_table(_table(tmp_path, text)), "smoke")
    assert run.config.finetune.micro_batch_size == type(run.config.finetune)().micro_batch_size == 32
    assert (run.config.data.image_size, run.config.train.seed) == (16, 0) and not hasattr(run.config.train, "bn_batch_size")
    assert {r.config.finetune.micro_batch_size for r in expand(load_table("t12"), "smoke")} == {8}


def test_overrides_a_task_ignores_are_refused():
    from repro.grid import with_overrides

    run = expand(load_table("t09"), "smoke")[0]
    assert with_overrides(run, {"data": {"root": "/data"}}).config.data.root == "/data"
    with pytest.raises(ConfigError, match="optim.lr_per_256: task 'detection' does not read this key"):
        with_overrides(run, {"optim": {"lr_per_256": 1.0}})


def test_fine_tuning_runs_one_process_and_refuses_a_world_size():
    runs = expand(load_table("t12"), "local")  # extends cpu-local, which runs 2 processes
    assert {r.config.processes for r in runs} == {1} and not hasattr(runs[0].config.train, "world_size")
    assert {r.config.processes for r in expand(load_table("t01"), "cpu")} == {2}
    with pytest.raises(ConfigError, match="train.world_size: task 'finetune' does not read this key"):
        from repro.grid import with_overrides

        with_overrides(runs[0], {"train": {"world_size": 2}})


@pytest.mark.parametrize("table, key", [
    ("t12", "train.epochs"), ("t12", "train.max_steps"), ("t12", "train.precision"),
    ("t09", "train.world_size"), ("t09", "train.bn_batch_size"), ("t09", "train.epochs"),
    ("t09", "train.timing_warmup"),
])
def test_a_transfer_run_refuses_what_only_pretraining_reads(table, key):
    from repro.grid import with_overrides
    from repro.config import undot

    run = expand(load_table(table), "smoke")[0]
    value = {"train.precision": "bf16"}.get(key, 3)
    with pytest.raises(ConfigError, match=f"{key}: task '{run.config.task}' does not read this key"):
        with_overrides(run, undot({key: value}))


def test_a_transfer_run_id_covers_only_the_fields_its_task_reads():
    # Inherited pre-training settings (the cpu base profiles' epochs, max_steps, ...) never reach
    # a fine-tuning or detection config; the fields the task reads change its id.
    from repro.config import config_hash, load_config
    from repro.grid import with_overrides

    for task, read in (("finetune", {"finetune": {"micro_batch_size": 8}}), ("detection", {"train": {"seed": 1}})):
        base = load_config({"task": task})
        assert config_hash(load_config({"task": task, **read})) != config_hash(base)
    runs = {r.row: r for r in expand(load_table("t12"), "smoke")}
    smaller = with_overrides(runs["ours-300-1pct"], {"finetune": {"micro_batch_size": 4}})
    assert smaller.run_id != runs["ours-300-1pct"].run_id


def test_a_row_limited_to_some_profiles_runs_only_there(tmp_path):
    p = _table(tmp_path, """
name: t99
title: t
source: s
columns: {top1: {label: Top-1}}
rows:
  - {id: a, label: A, set: {}}
  - {id: ctl, label: C, set: {train.max_steps: 0}, profiles: [smoke]}
profiles:
  smoke: {extends: cpu-smoke}
  local: {extends: cpu-local}
""")
    t = load_table(p)
    assert [r.row for r in expand(t, "smoke")] == ["a", "ctl"] and [r.row for r in expand(t, "local")] == ["a"]
    with pytest.raises(ConfigError, match=r"rows.ctl.profiles: 'huge' is not a profile"):
        load_table(_table(tmp_path, p.read_text().replace("profiles: [smoke]", "profiles: [huge]")))
