"""Figure 3 is drawn from Table 4's summaries and its rows' configs, and (through the rendered
files make reads) only changes when they change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from repro.grid import expand, load_table
from repro.results import figures as fig3
from repro.results.collect import render

REPO = Path(__file__).resolve().parents[2]


def finish(runs_root, run, top1):
    """A hand-made run record (as a finished run writes it), for the rendering path only."""
    d = run.run_dir(runs_root)
    d.mkdir(parents=True, exist_ok=True)
    (d / "final.json").write_text(json.dumps({"top1": top1, "top5": 99.0, "knn_top1": 50.0, "sec_per_iter": 0.1}))


T04 = load_table("t04")


def test_paper_curves_are_table4():
    curves = fig3.paper_curves(T04)
    byol = dict(zip(curves[curves.method == "byol"].bn_batch, curves[curves.method == "byol"].top1))
    ours = dict(zip(curves[curves.method == "ours"].bn_batch, curves[curves.method == "ours"].top1))
    assert byol == {64: 59.7, 128: 69.6, 256: 71.8, 512: 72.2}
    assert ours == {16: 68.3, 32: 72.0, 48: 72.5, 64: 72.6, 128: 72.9}


def test_changed_table4_result_changes_the_figure_input_and_nothing_else_does(tmp_path):
    runs_root, out = tmp_path / "runs", tmp_path / "out"
    runs = {r.row: r for r in expand(load_table("t04"), "smoke")}
    finish(runs_root, runs["ours-32"], 41.0)
    finish(runs_root, runs["byol-64"], 30.0)
    csv = render(load_table("t04"), "smoke", runs_root, out_dir=out)["csv"]
    data = fig3.figure_data(T04, fig3.rendered_summaries(out, T04))
    mine = data[data.profile == "smoke"].set_index("bn_batch")
    assert mine.loc[32, "top1"] == 41.0 and mine.loc[32, "method"] == "ours" and mine.loc[64, "method"] == "byol"
    assert len(mine) == 2  # unfinished rows are not plotted

    before = csv.stat().st_mtime_ns
    render(load_table("t04"), "smoke", runs_root, out_dir=out)  # same results: the csv is not touched
    assert csv.stat().st_mtime_ns == before

    finish(runs_root, runs["ours-32"], 45.5)
    render(load_table("t04"), "smoke", runs_root, out_dir=out)
    assert csv.stat().st_mtime_ns != before
    changed = fig3.figure_data(T04, fig3.rendered_summaries(out, T04))
    assert changed[(changed.profile == "smoke") & (changed.bn_batch == 32)].top1.item() == 45.5

    paths = fig3.draw(changed, tmp_path / "fig")
    assert all(p.stat().st_size > 1000 for p in paths) and [p.suffix for p in paths] == [".png", ".pdf"]


def test_the_control_is_a_level_on_its_profiles_panel(tmp_path, monkeypatch):
    """A reduced scale's random-init control is drawn across the panel, not as a BN-batch point."""
    runs_root, out = tmp_path / "runs", tmp_path / "out"
    runs = {(r.row, r.seed): r for r in expand(load_table("t04"), "cpu")}
    for seed, (trained, control) in enumerate([(88.0, 80.0), (90.0, 82.0)]):
        finish(runs_root, runs[("ours-32", seed)], trained)
        finish(runs_root, runs[("random-init", seed)], control)
    render(load_table("t04"), "cpu", runs_root, out_dir=out)
    data = fig3.figure_data(T04, fig3.rendered_summaries(out, T04))
    mine = data[data.profile == "cpu"]
    (level,) = mine[mine.method == "random-init"].itertuples()
    assert level.top1 == 81.0 and level.top1_std == 1.4142135623730951 and pd.isna(level.bn_batch)
    assert mine[mine.method == "ours"].bn_batch.tolist() == [32]

    import matplotlib.pyplot as plt

    kept = []  # keep the drawn figure open, to look at its lines
    monkeypatch.setattr(plt, "close", kept.append)
    paths = fig3.draw(data, tmp_path / "fig")
    assert all(p.stat().st_size > 1000 for p in paths)
    panel = kept[0].axes[1]
    assert panel.get_title() == "reproduced: profile cpu"
    (level_line,) = [line for line in panel.get_lines() if line.get_label().startswith("random init")]
    assert level_line.get_label() == "random init (control, never trained)"
    assert list(level_line.get_ydata()) == [81.0, 81.0]
    monkeypatch.undo()
    plt.close(kept[0])


def test_script_runs_without_results(tmp_path):
    """The thin command line over repro.results.figures, run from elsewhere (this checkout's package)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "figures" / "fig3_bn_batch.py"), "--results", str(tmp_path),
                          "--out", str(tmp_path / "fig")], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env).stdout
    assert "0 reproduced points" in out and (tmp_path / "fig" / "fig3.png").is_file()


def test_points_come_from_the_rows_configs_not_their_ids():
    """A row's method and BN batch are its config's (teacher norm, train.bn_batch_size): a row
    whose id says otherwise is drawn where its config puts it."""
    import dataclasses

    moved = dataclasses.replace(T04, rows=[
        dataclasses.replace(r, set={"model.teacher_norm": "bn", "train.bn_batch_size": 24}) if r.id == "ours-64" else r
        for r in T04.rows])
    summary = pd.DataFrame({"row": ["ours-64", "ours-16"], "top1": [41.0, 30.0], "top1_std": [None, 0.5]})
    points = fig3.reproduced_points(moved, summary, "smoke").set_index("method")
    assert points.loc["byol", "bn_batch"] == 24 and points.loc["byol", "top1"] == 41.0
    assert points.loc["ours", "bn_batch"] == 16 and points.loc["ours", "top1_std"] == 0.5


def test_the_report_draws_figure3_from_the_summaries_it_holds(tmp_path, monkeypatch):
    """The report hands its in-memory summaries over: no rendered csv is read back."""
    from repro.results import report

    runs_root = tmp_path / "runs"
    runs = {r.row: r for r in expand(T04, "smoke")}
    finish(runs_root, runs["ours-16"], 44.0)
    seen = {}
    real = fig3.draw
    monkeypatch.setattr(fig3, "rendered_summaries", lambda *a: pytest.fail("the report read a csv back"))
    monkeypatch.setattr(fig3, "draw", lambda data, out: seen.setdefault("data", data) is not None and real(data, out))
    report.build([runs_root], tmp_path / "report", profiles=["smoke"])
    mine = seen["data"][seen["data"].profile == "smoke"]
    assert mine[["method", "bn_batch", "top1"]].values.tolist() == [["ours", 16, 44.0]]
