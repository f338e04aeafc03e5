"""Ctrl-C in a terminal (tmux, ``send-keys C-c``): one line, exit 130, no submitit
traceback on the screen; the rerun resumes from the checkpoints and finishes the table."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from needs import programs

from repro.cli import main

REPO = Path(__file__).resolve().parents[2]


def _steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    (tmux,) = programs("tmux", hint="apt-get install tmux")
    runs, out, rc = tmp_path / "runs", tmp_path / "out", tmp_path / "rc"
    command = (f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m repro run t01 --profile smoke "
               f"--runs {runs} --out {out}; echo $? > {rc}")
    session = f"repro-ctrl-c-{os.getpid()}-{tmp_path.name}"  # tmp_path.name repeats across concurrent pytest runs
    server = ["-L", session]  # a tmux server of its own
    subprocess.run([tmux, *server, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "bash", "-c",
                    command + "; sleep 600"], check=True)
    try:
        deadline = time.monotonic() + 480  # 12 processes start on 2 cores first
        # Interrupted once a run has a checkpoint (every 2 steps at smoke) and is still training.
        while not any(list((m.parent / "checkpoints").glob("step_*.pt")) and not (m.parent / "final.json").exists()
                      for m in runs.glob("t01/smoke/*/metrics.jsonl")):
            assert time.monotonic() < deadline and not rc.exists(), "the runs never started training"
            time.sleep(0.1)
        subprocess.run([tmux, *server, "send-keys", "-t", session, "C-c"], check=True)
        deadline = time.monotonic() + 120
        while not rc.exists():
            assert time.monotonic() < deadline, "the launcher did not exit after Ctrl-C"
            time.sleep(0.1)
        time.sleep(2.0)  # anything the controllers would still print
        screen = subprocess.run([tmux, *server, "capture-pane", "-p", "-t", session, "-S", "-200"],
                                capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run([tmux, *server, "kill-server"], check=False)
    assert rc.read_text().strip() == "130", screen
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen, screen
    assert screen.count("interrupted: finished runs are kept; running ones resume from their last checkpoint") == 1
    started = {m.parent: _steps(m) for m in runs.glob("t01/smoke/*/metrics.jsonl")
               if list((m.parent / "checkpoints").glob("step_*.pt")) and not (m.parent / "final.json").exists()}
    assert started
    assert main(["run", "t01", "--profile", "smoke", "--runs", str(runs), "--out", str(out),
                 "--progress-every", "600"]) == 0
    assert "6/6 runs done" in (out / "table1.md").read_text()
    for run_dir in started:  # resumed from its checkpoint: step 1 was never trained again
        steps = _steps(run_dir / "metrics.jsonl")
        assert steps.count(1) == 1 and steps[-1] == 6, (run_dir.name, steps)


def test_an_interrupted_command_prints_one_line_and_exits_130(monkeypatch, capsys):
    """The fast tier's check of what the slow test above sees on the screen: the CLI's answer
    to a KeyboardInterrupt, without the terminal, the launcher or the runs."""
    import repro.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert main(["run", "t01", "--profile", "smoke"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "interrupted: finished runs are kept; running ones resume from their last checkpoint\n"
