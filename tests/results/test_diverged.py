"""A run whose training diverged is a result: the table, the figure and the claims name it.

Hand-made records of Table 4 at profile ``cpu`` (two seeds), written where the grid puts them;
``byol-16``'s training diverged at seed 1 (its ``final.json`` records why, as
``repro/launch/tasks.py`` writes it).
"""

import pandas as pd

from repro.grid import expand, load_table
from repro.results import figures
from repro.results.claims import diverged_seeds, evaluate, load_claims, measured_values, needs_control
from repro.results.collect import collect, display_frame, reading_note, summarise
from repro.rundir import RunDir, Status

VALUES = {"byol-16": [80.0, None], "byol-128": [88.0, 88.3], "ours-16": [87.0, 87.4], "ours-32": [88.0, 88.1],
          "random-init": [70.0, 70.3]}
WHY = "loss is nan at step 40 (lr 0.05)"


def write(root):
    for run in expand(load_table("t04"), "cpu"):
        if run.row not in VALUES:
            continue
        top1 = VALUES[run.row][run.seed]
        d = RunDir.of(run, root)
        d.path.mkdir(parents=True)
        d.write_final({"top1": top1, "knn_top1": top1 - 3} if top1 is not None else
                      {"diverged": WHY, "diverged_at_step": 40, "steps": 40, "total_steps": 100})
    return root


def verdict(claim_id, runs, diverged):
    claim = next(c for c in load_claims().claims if c.id == claim_id)
    table = load_table("t04")
    return evaluate(claim, measured_values(table, "cpu", runs, "top1"), "cpu", paper=None,
                    gate=needs_control(table, "cpu", "top1"), diverged=diverged)


def test_a_diverged_run_is_its_row_s_result_at_that_seed_in_the_table(tmp_path):
    table = load_table("t04")
    runs = collect(table, "cpu", write(tmp_path))
    run = runs[(runs["row"] == "byol-16") & (runs["seed"] == 1)].iloc[0]
    assert run["status"] == Status.DIVERGED and pd.isna(run["top1"]) and run["diverged_at_step"] == 40
    assert run["error"] == f"training diverged: {WHY}"
    summary = summarise(table, runs, "cpu")
    row = summary.set_index("row").loc["byol-16"]
    # The mean is over the seed that trained, and the table says that the other diverged.
    assert row["status"] == Status.DIVERGED and row["top1"] == 80.0 and row["seeds_done"] == 1
    shown = display_frame(table, summary, "cpu").set_index("Row")
    assert shown.loc["BYOL, BN 16", "seeds"] == "1/2 (1 diverged)"
    assert shown.loc["BYOL, BN 128", "seeds"] == "2/2"
    assert "**Training diverged** (BYOL, BN 16 at 1 of 2 seeds)" in reading_note(table, "cpu", summary)
    # Figure 3 marks the point: its value is the mean over the seeds that trained.
    points = figures.reproduced_points(table, summary, "cpu").set_index(["method", "bn_batch"])
    assert points.loc[("byol", 16), "diverged"] == 1 and points.loc[("byol", 16), "top1"] == 80.0
    assert points.loc[("byol", 128), "diverged"] == 0


def test_a_claim_that_needs_a_diverged_row_reads_no_verdict_and_the_others_keep_every_seed(tmp_path):
    runs = collect(load_table("t04"), "cpu", write(tmp_path))
    diverged = diverged_seeds(runs)
    assert diverged == {"byol-16": (1,)}
    # "BYOL deteriorates more than ours from 128 to 16" needs byol-16 at profile cpu: its seed 1
    # has no accuracy, and seed 0 alone is the seed where BYOL survived.
    v = verdict("byol-deteriorates-ours-robust", runs, diverged)
    assert v.verdict == "inconclusive"
    assert v.reason.startswith("training diverged (byol-16 at seed 1): a diverged run has no top1")
    assert "the runs that trained show" in v.reason
    # A claim without byol-16 reads the table's two-way layout over both seeds, byol-16 left
    # out of it: rows byol-128, ours-16, ours-32 x seeds 0, 1 -> (3 - 1)(2 - 1) = 2 df. Were
    # byol-16 kept in, the seeds all rows share would be seed 0 alone, and no table interval.
    v = verdict("small-bn-on-par-with-byol-large", runs, diverged)
    interval = v.results[0].interval
    assert interval.rows == 3 and interval.df == 2 and interval.n == 2
    assert verdict("small-bn-on-par-with-byol-large", runs, {}).results[0].interval.rows is None


def test_figure_3_draws_a_row_whose_every_seed_diverged(tmp_path):
    table = load_table("t04")
    root = write(tmp_path / "runs")
    for run in expand(table, "cpu"):
        if run.row == "byol-16" and run.seed == 0:
            RunDir.of(run, root).write_final({"diverged": WHY, "diverged_at_step": 40, "steps": 40})
    summary = summarise(table, collect(table, "cpu", root), "cpu")
    data = figures.figure_data(table, {"cpu": summary})
    point = data[(data["profile"] == "cpu") & (data["bn_batch"] == 16) & (data["method"] == "byol")].iloc[0]
    assert point["diverged"] == 2 and point["seeds"] == 2 and point["top1"] != point["top1"]  # NaN: none trained
    paths = figures.draw(data, tmp_path / "fig")
    assert all(p.stat().st_size > 0 for p in paths)


def test_the_report_lists_the_runs_whose_training_diverged(tmp_path):
    from repro.results import report

    root = write(tmp_path / "runs")
    report.build([root], tmp_path / "out", profiles=["cpu"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Runs whose training diverged" in md and f"training diverged: {WHY}" in md
    assert "1/2 (1 diverged)" in md and "9/18 runs done, 1 diverged" in md
    assert "training diverged (byol-16 at seed 1)" in md
