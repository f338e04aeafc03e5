"""Table 1's smoke profile end to end through submitit's LocalExecutor (real processes).

grid -> one job array -> run directories -> pandas -> csv/md/tex; then a relaunch trains
nothing, and a run broken on purpose is reported as failed and can be rerun.
"""

import json
import time

import pandas as pd
import pytest

from repro.grid import load_table
from repro.launch import submit
from repro.results.collect import render
from repro.train.checkpoint import sha256
from test_grid import PAPER_T1

pytestmark = pytest.mark.slow  # six real training runs through the LocalExecutor


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    report = submit.launch(load_table("t01"), "smoke", "local", runs, log=lambda *a: None)
    failures = submit.wait(report, runs, log=lambda *a: None)
    out = tmp_path_factory.mktemp("out")
    return runs, report, failures, render(load_table("t01"), "smoke", runs, out_dir=out)


def test_one_array_of_six_runs_all_done(smoke):
    runs, report, failures, _ = smoke
    assert failures == []
    assert len(report.submitted) == 6 and len(report.jobs) == 6
    for run in report.submitted:
        d = run.run_dir(runs)
        final = json.loads((d / "final.json").read_text())
        assert final["steps"] == 6 and final["world_size"] == 2
        # The final checkpoint's sha256, which a transfer checks before exporting it.
        assert final["final_checkpoint_sha256"] == sha256(d / final["final_checkpoint"])
        assert "commit" in (d / "config.yaml").read_text()
        assert len((d / "metrics.jsonl").read_text().splitlines()) == 6


def test_rendered_table_has_paper_and_measured_columns(smoke):
    _, _, _, paths = smoke
    df = pd.read_csv(paths["csv"])
    assert list(df["row"]) == list(PAPER_T1)
    for _, r in df.iterrows():
        _, _, top1, spi = PAPER_T1[r["row"]]
        assert r["paper_top1"] == top1 and r["paper_sec_per_iter"] == spi
        assert r["status"] == "done" and r["profile"] == "smoke"
        assert 0 <= r["top1"] <= 100 and 0 <= r["knn_top1"] <= 100 and r["sec_per_iter"] > 0
        assert "top1_delta" not in r  # no difference to the paper at a reduced scale
    ref = df.set_index("row").loc["bn-bn"]
    assert ref["sec_per_iter_ratio"] == pytest.approx(1.0) and ref["paper_sec_per_iter_ratio"] == pytest.approx(1.0)
    assert df.set_index("row").loc["syncbn-syncbn", "paper_sec_per_iter_ratio"] == pytest.approx(1.1 / 0.24)
    md = paths["md"].read_text()
    assert "Synced BN / Momentum BN" in md and "88.25" in md and "Top-1 (%) (smoke)" in md and "Δ" not in md
    assert r"\begin{tabular}" in paths["tex"].read_text()


def test_relaunch_trains_nothing(smoke):
    runs = smoke[0]
    t0 = time.time()
    report = submit.launch(load_table("t01"), "smoke", "local", runs, log=lambda *a: None)
    assert report.submitted == [] and len(report.skipped_done) == 6
    assert time.time() - t0 < 10


def test_a_failed_run_is_reported_and_can_be_rerun(smoke, tmp_path):
    runs, report, _, _ = smoke
    run = next(r for r in report.submitted if r.row == "bn-bn")
    d = run.run_dir(runs)
    (d / "final.json").unlink()
    latest = sorted((d / "checkpoints").glob("step_*.pt"))[-1]
    good = latest.read_bytes()
    latest.write_bytes(b"not a checkpoint")
    report = submit.launch(load_table("t01"), "smoke", "local", runs, log=lambda *a: None)
    assert [r.row for r in report.submitted] == ["bn-bn"]
    failures = submit.wait(report, runs, log=lambda *a: None)
    assert len(failures) == 1 and "CheckpointError" in failures[0][1] and latest.name in failures[0][1]
    paths = render(load_table("t01"), "smoke", runs, out_dir=tmp_path)
    df = pd.read_csv(paths["csv"]).set_index("row")
    assert df.loc["bn-bn", "status"] == "failed" and pd.isna(df.loc["bn-bn", "top1"])
    assert (df.drop("bn-bn")["status"] == "done").all()
    # Not resubmitted silently; rerun on request once the cause is fixed.
    messages = []
    assert submit.launch(load_table("t01"), "smoke", "local", runs, log=messages.append).submitted == []
    assert any("FAILED earlier" in m and "--rerun-failed" in m for m in messages)
    latest.write_bytes(good)
    report = submit.launch(load_table("t01"), "smoke", "local", runs, rerun_failed=True, log=lambda *a: None)
    assert submit.wait(report, runs, log=lambda *a: None) == []
    assert pd.read_csv(render(load_table("t01"), "smoke", runs, out_dir=tmp_path)["csv"])["status"].eq("done").all()
