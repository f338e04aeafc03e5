"""The GPU-hours printed (and confirmed) before a paper-scale grid is submitted."""

from __future__ import annotations

import io

import pytest
import yaml

from repro import cli
from repro.launch import cost
from repro.grid import TABLES_DIR, expand, load_table


def test_gpu_hours_of_table1_row1():
    # 400 epochs x floor(105,000 / 2048) = 51 steps = 20,400 steps x 1.1 s x 64 GPUs.
    steps, hours = cost.gpu_hours(epochs=400, dataset_images=105_000, global_batch_size=2048, world_size=64,
                                  sec_per_iter=1.1)
    assert steps == 20_400
    assert hours == pytest.approx(20_400 * 1.1 * 64 / 3600) and round(hours, 1) == 398.9


def test_max_steps_caps_and_imagenet_counts():
    assert cost.gpu_hours(epochs=400, dataset_images=105_000, global_batch_size=2048, world_size=64,
                          sec_per_iter=1.0, max_steps=100) == (100, pytest.approx(100 * 64 / 3600))
    # ImageNet, 300 epochs, 4096 images per step: 1,281,167 // 4096 = 312 steps per epoch.
    steps, hours = cost.gpu_hours(epochs=300, dataset_images=1_281_167, global_batch_size=4096, world_size=128,
                                  sec_per_iter=0.6)
    assert steps == 93_600 and hours == pytest.approx(93_600 * 0.6 * 128 / 3600)


def test_table1_paper_grid_uses_each_rows_paper_speed():
    table = load_table("t01")
    costs = cost.estimate(table, expand(table, "paper"))
    paper = {row.id: row.paper["sec_per_iter"] for row in table.rows if "sec_per_iter" in row.paper}  # CPU-only rows have none
    assert [c.sec_per_iter for c in costs] == list(paper.values())
    assert all(c.steps == 20_400 and c.world_size == 64 and c.source == "paper" for c in costs)
    total = sum(c.gpu_hours for c in costs)
    assert total == pytest.approx(20_400 * sum(paper.values()) * 64 / 3600) and round(total) == 1077
    text = cost.describe(costs)
    assert "20,400 steps x 1.1 s x 64 GPUs =     398.9 GPU-h" in text and "total: 1,077.1 GPU-hours for 6 runs" in text


def test_a_table_without_sec_per_iter_uses_the_default_for_its_dataset_and_arch(tmp_path):
    # A copy of Table 1 with the column removed structurally (the column, every row's paper
    # value and the reference row of the sec/iter ratio), so it does not depend on the YAML's layout.
    data = yaml.safe_load((TABLES_DIR / "t01_stl10_bn.yaml").read_text())
    assert "sec_per_iter" in data["columns"]  # what there is to remove
    del data["columns"]["sec_per_iter"]
    for row in data["rows"]:
        row.get("paper", {}).pop("sec_per_iter", None)
    del data["reference_row"]
    data["name"] = "t98"
    text = yaml.safe_dump(data, sort_keys=False)
    assert "sec_per_iter" not in text
    (tmp_path / "t98.yaml").write_text(text)
    table = load_table(tmp_path / "t98.yaml")
    assert "sec_per_iter" not in table.columns and not any("sec_per_iter" in row.paper for row in table.rows)
    costs = cost.estimate(table, expand(table, "paper"))
    assert {c.sec_per_iter for c in costs} == {0.25} and costs[0].source == "default for stl10/resnet18"
    unknown = cost.estimate(table, expand(table, "smoke"))  # built-in data: no paper figure to go by
    assert {(c.gpu_hours, c.source) for c in unknown} == {(None, "no image count for dataset 'digits'")}
    assert "total: 0.0 GPU-hours for 0 runs, and 6 runs of unknown cost" in cost.describe(unknown)


def test_every_paper_pretraining_grid_is_priced():
    for path in sorted(TABLES_DIR.glob("t*.yaml")):
        table = load_table(path)
        if "paper" in table.profiles:
            for c, run in zip(cost.estimate(table, expand(table, "paper")), expand(table, "paper")):
                if run.config.task == "pretrain":
                    assert c.gpu_hours > 0 and c.steps > 0, (table.name, c)
                else:  # fine-tuning and detection: the paper gives no speed to go by
                    assert c.gpu_hours is None and c.source == f"no paper figure for {run.config.task} runs"


@pytest.fixture
def paper_launch(monkeypatch, tmp_path):
    """The CLI on Table 1's paper profile, with the data check stubbed and nothing submitted."""
    import repro.data.datasets as datasets
    from repro.launch import submit

    monkeypatch.setattr(datasets, "check_available", lambda name, root: None)
    submitted = []
    monkeypatch.setattr(submit, "make_executor", lambda *a, **k: submitted.append(a) or pytest.fail("submitted"))
    runs = tmp_path / "runs"
    return ["run", "t01", "--profile", "paper", "--cluster", "slurm", "--runs", str(runs),
            "--data-root", str(tmp_path)], runs, submitted


def test_without_a_terminal_and_without_yes_the_paper_grid_is_refused(paper_launch, capsys, monkeypatch):
    args, runs, submitted = paper_launch
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a TTY
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert "total: 1,077.1 GPU-hours for 6 runs" in out
    assert "refusing to submit a paper-scale grid without confirmation" in err and "--yes" in err
    assert submitted == [] and not (runs / "t01").exists()


def test_a_no_on_the_terminal_submits_nothing_and_yes_confirms(paper_launch, capsys, monkeypatch):
    args, runs, submitted = paper_launch

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    assert "submit them? [y/N]" in out and "nothing submitted" in err
    assert submitted == [] and not (runs / "t01").exists()
    assert cli._confirm_cost(load_table("t01"), expand(load_table("t01"), "paper"), assume_yes=True) is True
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert cli._confirm_cost(load_table("t01"), expand(load_table("t01"), "paper"), assume_yes=False) is True


def test_the_random_init_control_costs_no_step():
    assert cost.gpu_hours(epochs=10, dataset_images=1442, global_batch_size=32, world_size=2, sec_per_iter=0.2,
                          max_steps=0) == (0, 0.0)


def test_emulated_device_profiles_cost_the_paper_s_gpu_hours_on_fewer_gpus():
    """paper-1x64 and paper-8x8 do the paper's work (the same GPU-hours at its per-GPU speed) on
    1 and 8 GPUs, so one run trains 64 and 8 times as long as the paper's."""
    table = load_table("t01")
    paper = {c.run_id.split("-s0")[0]: c for c in cost.estimate(table, expand(table, "paper"))}
    for profile, gpus, devices in (("paper-1x64", 1, 64), ("paper-8x8", 8, 8)):
        for c in cost.estimate(table, expand(table, profile)):
            twin = paper[c.run_id.split("-s0")[0]]
            assert (c.world_size, c.devices, c.steps) == (gpus, devices, 20_400)
            assert c.gpu_hours == pytest.approx(twin.gpu_hours)
            assert c.wall_hours == pytest.approx(twin.wall_hours * devices)
        assert f"x {gpus} GPUs x {devices} devices" in cost.describe(cost.estimate(table, expand(table, profile)))
