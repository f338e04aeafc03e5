"""The live view of ``run``, a relaunch that attaches to running work, and the exit status.

The end-to-end scenario: launcher A (a subprocess, no terminal: summary lines) starts Table
1's smoke runs and is killed with SIGKILL once they train; its runs go on as orphans.
Launcher B (in this process, on a fake terminal: a redrawn block) finds them running,
submits nothing, waits for them, renders 6/6 and exits 0.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from repro.grid import load_table
from repro.cli import main
from repro.launch import progress
from repro.launch.progress import LiveView, RunProgress
from repro.results import collect
from slurm_helpers import write_table

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------- the view, on made-up figures

RUNS = [RunProgress("a-s0", "done", 4, 4, 1.0, 0.5), RunProgress("b-s0", "running", 1, 4, 2.5, 0.5),
        RunProgress("c-s0", "running", None, None, None, None), RunProgress("d-s0", "new"),
        RunProgress("e-s0", "corrupt", error="final.json is unreadable")]


def test_counts_eta_and_summary_line():
    assert progress.counts(RUNS) == {"done": 1, "running": 2, "pending": 1, "failed": 1}
    assert RUNS[1].eta_s == pytest.approx(1.5) and RUNS[2].eta_s is None
    # b: 1.5 s left; c: no figures yet, one mean run (4 steps x 0.5 s = 2 s); d: 2 s; over 2 running.
    assert progress.overall_eta_s(RUNS) == pytest.approx((1.5 + 2 + 2) / 2)
    assert progress.summary_line("t01/smoke", RUNS) == "t01/smoke: 1/5 done, 2 running, 1 pending, 1 failed; ETA 0m03s"
    assert progress.summary_line("t", RUNS, detail=True).endswith("| b-s0 1/4 ETA 0m02s | c-s0 - ETA ?")


def test_eta_reads_how_long_finished_runs_took_not_their_pauses(tmp_path):
    """A campaign spans sessions: a finished run that was paused for 10 hours and resumed took
    its steps at its pace and its probes, not the 10 hours between its first and last line."""
    from repro.rundir import RunDir, RunState, Status

    done = RunDir(tmp_path / "done")
    done.path.mkdir()
    done.metrics.write_text("".join(json.dumps({"step": s, "total_steps": 100, "sec_per_iter": 1.0, "time": t}) + "\n"
                                    for s, t in ((10, 0.0), (50, 40.0), (60, 36_000.0), (100, 36_040.0))))
    done.write_final({"steps": 100, "sec_per_iter": 1.0, "probe_wall_s": 20.0, "top1": 50.0})
    p = progress.read_progress("done-s0", done, RunState(Status.DONE))
    assert (p.length_s, p.probe_s) == (120.0, 20.0)
    # A slow outlier (its attempt shared the cores) does not set the typical length: the median.
    slow = RunProgress("slow-s0", "done", length_s=3_000.0, probe_s=20.0)
    fast = RunProgress("fast-s0", "done", length_s=100.0, probe_s=20.0)
    running = RunProgress("r-s0", "running", 70, 100, 1.0, 1.0)
    table = [p, slow, fast, running, RunProgress("n-s0", "new"), RunProgress("m-s0", "pending")]
    assert progress.typical_length_s(table) == 120.0
    assert progress.run_left_s(running, table) == 30.0 + 20.0  # its training left, and the probes
    assert progress.overall_eta_s(table) == 50.0 + 2 * 120.0


def test_terminal_block_is_redrawn_in_place():
    out = FakeTerminal()
    view = LiveView("t01/smoke", out)
    view.update(RUNS)
    first = out.getvalue()
    assert first.splitlines() == [
        "t01/smoke: 1/5 done, 2 running, 1 pending, 1 failed; ETA 0m03s",
        f"  {'b-s0':<40} |#####               | step         1/4  loss   2.5000    0.500 s/step  ETA 0m02s",
        f"  {'c-s0':<40} |                    | step           -  loss        -        - s/step  ETA ?"]
    view.note("  [1/4] a-s0: done")
    view.update(RUNS)
    # Up three lines and clear before the note, and the block drawn again under it.
    assert out.getvalue()[len(first):].startswith("\x1b[3F\x1b[J  [1/4] a-s0: done\nt01/smoke: 1/5")


def test_without_a_terminal_one_line_per_interval_and_when_a_run_ends():
    out, now = io.StringIO(), [0.0]
    view = LiveView("t", out, interval_s=30, clock=lambda: now[0])
    for t in (0, 10, 29.9, 30, 45):
        now[0] = t
        view.update(RUNS)
    assert len(out.getvalue().splitlines()) == 2  # at 0 and at 30 s
    view.update([RunProgress("a-s0", "done")] * 5)  # counts changed: a line at once
    assert out.getvalue().splitlines()[-1].startswith("t: 5/5 done, 0 running, 0 pending, 0 failed; ETA 0m00s")


# ---------------------------------------------------------------- a launcher killed, a launcher attached


def _python() -> str:
    return sys.executable


@pytest.fixture(scope="module")
def killed_then_attached(tmp_path_factory):
    root = tmp_path_factory.mktemp("attach")
    runs, out = root / "runs", root / "out"
    log = (root / "a.log").open("w")
    a = subprocess.Popen([_python(), "-m", "repro", "run", "t01", "--profile", "smoke", "--runs", str(runs),
                          "--out", str(out), "--progress-every", "0.5"], cwd=REPO, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    # Killed once its summary line shows a run training (its step of 6: smoke has 6 steps).
    while not re.search(r"\| \S+ [1-6]/6 ETA", (root / "a.log").read_text()):
        assert a.poll() is None and time.monotonic() < deadline, (root / "a.log").read_text()
        time.sleep(0.2)
    a.send_signal(signal.SIGKILL)
    a.wait()
    log.close()
    orphans = [json.loads(j.read_text())["job_id"] for j in runs.glob("t01/smoke/*/job.json")]
    assert len(orphans) == 6 and all(_alive(j) for j in orphans if not _done(runs, j))

    terminal = FakeTerminal()
    saved = sys.stdout
    sys.stdout = terminal
    try:
        rc = main(["run", "t01", "--profile", "smoke", "--runs", str(runs), "--out", str(out)])
    finally:
        sys.stdout = saved
    return runs, out, (root / "a.log").read_text(), rc, terminal.getvalue()


def _alive(job_id: str) -> bool:
    try:
        os.kill(int(str(job_id).split("_")[0]), 0)
        return True
    except OSError:
        return False


def _done(runs: Path, job_id: str) -> bool:
    return any((j.parent / "final.json").is_file() for j in runs.glob("t01/smoke/*/job.json")
               if json.loads(j.read_text())["job_id"] == job_id)


@pytest.mark.slow  # killed_then_attached: Table 1's smoke launched, killed and attached to, in real processes
def test_without_a_terminal_the_launcher_prints_summary_lines(killed_then_attached):
    a_log = killed_then_attached[2]
    lines = [line for line in a_log.splitlines() if line.startswith("t01/smoke: ")]
    assert lines, a_log
    assert re.fullmatch(r"t01/smoke: \d/6 done, \d running, \d pending, 0 failed; ETA (\?|\d+m\d\ds)(.*)", lines[-1])
    assert "\x1b[" not in a_log  # no cursor movement in a log file
    # Once a run trains, the line names it with its step of 4 (the fixture waited for that).
    assert any(re.search(r"\| \S+-s0-\w+ [1-6]/6 ETA \d+m\d\ds", line) for line in lines), a_log


@pytest.mark.slow
def test_the_relaunch_attaches_waits_and_renders_six_of_six(killed_then_attached):
    runs, out, _, rc, shown = killed_then_attached
    assert rc == 0
    plain = ANSI.sub("", shown)
    assert "0 to submit" in plain and re.search(r"\(0 submitted, [1-6] found queued or running", plain), plain
    assert "\x1b[" in shown  # a terminal: the block is redrawn
    # A running run's bar (during its probes it stays at 6/6).
    assert re.search(r"\n  \S+-s0-\w+ +\|[# ]{20}\| step +[1-6]/6  loss +-?\d+\.\d{4} +\d+\.\d{3} s/step  "
                     r"ETA \d+m\d\ds\n", plain), plain
    assert "t01/smoke: 6/6 done, 0 running, 0 pending, 0 failed; ETA 0m00s" in plain
    assert "6/6 runs done" in (out / "table1.md").read_text()
    df = pd.read_csv(out / "table1.csv")
    assert (df["status"] == "done").all() and df["top1"].between(0, 100).all()


@pytest.mark.slow
def test_status_shows_the_same_figures(killed_then_attached, capsys):
    runs = killed_then_attached[0]
    assert main(["status", "t01", "--profile", "smoke", "--runs", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(re.search(r" done .* 6/6 +\d+\.\d{4} +\d+\.\d{3} +-$", line) for line in lines[1:7]), lines
    assert lines[7] == "t01/smoke: 6/6 done, 0 running, 0 pending, 0 failed; ETA 0m00s"


@pytest.mark.slow
def test_a_less_complete_table_never_replaces_a_more_complete_one(killed_then_attached, tmp_path):
    runs, out, *_ = killed_then_attached
    before = (out / "table1.md").read_text()
    final = next(runs.glob("t01/smoke/bn-bn-*/final.json"))
    moved = tmp_path / "final.json"
    final.rename(moved)
    try:
        paths, kept = collect.render_unless_less_complete(load_table("t01"), "smoke", runs, out_dir=out)
        assert kept is not None and "6 runs done" in kept and "5 now" in kept
        assert (out / "table1.md").read_text() == before
        # Another profile's table is not this one: rendered.
        assert collect.render_unless_less_complete(load_table("t01"), "smoke", runs, out_dir=tmp_path / "o")[1] is None
    finally:
        moved.rename(final)


def test_a_launcher_whose_runs_fail_exits_non_zero_and_names_them(tmp_path, capsys):
    # 1024 images per process x 2: more than the digits hold, so the job fails at once.
    table = write_table(tmp_path, name="t93", bn_batch_size=1024)
    rc = main(["run", str(table), "--profile", "smoke", "--runs", str(tmp_path / "runs"),
               "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert rc == 1
    assert "FAILED: ValueError: dataset of" in printed.out
    assert "the table is incomplete: 1/1 runs not done (1 runs failed" in printed.err
    assert re.search(r"  syncbn-mbn-s0-\w+: failed: ValueError: dataset of", printed.err)


@pytest.mark.slow
def test_a_corrupt_final_json_is_rerun_with_rerun_failed_from_its_checkpoints(killed_then_attached, capsys):
    runs, out, *_ = killed_then_attached
    final = next(runs.glob("t01/smoke/bn-mbn-*/final.json"))
    good = json.loads(final.read_text())
    final.write_text('{"top1": ')
    args = ["run", "t01", "--profile", "smoke", "--runs", str(runs), "--out", str(tmp := out.parent / "o2")]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "CORRUPT" in printed.out and f"{final} is unreadable" in printed.out
    assert re.search(r"bn-mbn-s0-\w+: corrupt: .*final.json is unreadable", printed.err)
    assert main(args + ["--rerun-failed"]) == 0
    again = json.loads(final.read_text())
    assert (final.parent / "final.json.corrupt").read_text() == '{"top1": '
    # Resumed from its last checkpoint: no step trained again, the same teacher probed again.
    assert again["steps"] == good["steps"] == 6 and again["top1"] == pytest.approx(good["top1"])
    assert "6/6 runs done" in (tmp / "table1.md").read_text()


@pytest.mark.slow
def test_each_smoke_run_writes_tensorboard_scalars_read_back_by_tensorboard(killed_then_attached):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = killed_then_attached[0]
    for run_dir in sorted(runs.glob("t01/smoke/*-s0-*")):
        board = EventAccumulator(str(run_dir / "tensorboard"))
        board.Reload()
        tags = set(board.Tags()["scalars"])
        assert {"train/loss", "train/lr", "train/tau", "train/alpha", "train/sec/iter",
                "result/top1", "result/knn_top1", "result/sec/iter"} <= tags, tags
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        loss = {e.step: e.value for e in board.Scalars("train/loss")}
        assert loss == pytest.approx({r["step"]: r["loss"] for r in logged}), run_dir.name
        final = json.loads((run_dir / "final.json").read_text())
        top1 = board.Scalars("result/top1")[-1]  # bn-mbn was probed twice (the corrupt-file test)
        assert top1.step == 6 and top1.value == pytest.approx(final["top1"])
