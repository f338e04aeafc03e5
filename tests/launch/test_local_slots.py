"""Local runs take the machine's slots in submission order, and a dead waiter blocks no one."""

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from repro.launch.job import local_slot
from repro.launch.submit import LaunchReport, _sort_runs


def _wait_for_slot(slots_dir: str, ticket: str, log: str) -> None:
    run_dir = Path(slots_dir).parent / f"run-{ticket}"
    run_dir.mkdir(exist_ok=True)
    with local_slot(Path(slots_dir), 1, f"job{ticket}", 0, run_dir, ticket):
        with open(log, "a") as f:
            f.write(ticket + "\n")
        time.sleep(0.05)


def _queued(slots_dir: Path, n: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while len(list((slots_dir / "queue").glob("*"))) < n:
        assert time.time() < deadline, "the waiters never queued"
        time.sleep(0.05)


def test_waiting_jobs_take_the_slot_in_ticket_order_and_a_dead_waiter_is_skipped(tmp_path):
    slots, log = tmp_path / ".slots", tmp_path / "order.txt"
    ctx = mp.get_context("fork")
    release = tmp_path / "release"

    def hold():  # keeps the one slot until ``release`` exists
        with local_slot(slots, 1, "holder", 0, tmp_path, "000"):
            while not release.exists():
                time.sleep(0.05)

    holder = ctx.Process(target=hold)
    holder.start()
    deadline = time.time() + 20
    while not (slots / "granted-holder").exists():
        assert time.time() < deadline and holder.is_alive(), "the first job never got the slot"
        time.sleep(0.05)
    # Started in reverse order; ticket 002 dies while it waits.
    waiters = {t: ctx.Process(target=_wait_for_slot, args=(str(slots), t, str(log))) for t in ("004", "003", "002", "001")}
    for t, p in waiters.items():
        p.start()
        _queued(slots, 5 - int(t))
    os.kill(waiters["002"].pid, signal.SIGKILL)
    waiters["002"].join()
    release.touch()
    holder.join(20)
    for t, p in waiters.items():
        p.join(20)
        assert t == "002" or p.exitcode == 0
    assert log.read_text().split() == ["001", "003", "004"]
    assert not list((slots / "queue").iterdir())  # the dead waiter's ticket was cleared too


class _Run:
    def __init__(self, row, seed):
        self.row, self.seed, self.run_id = row, seed, f"{row}-s{seed}"

    def run_dir(self, root):
        return Path(root) / self.run_id


def test_runs_are_submitted_seed_by_seed_in_table_order(tmp_path):
    runs = [_Run(row, seed) for row in ("a", "b", "c") for seed in (0, 1)]  # the grid's order: row by row
    report = _sort_runs(LaunchReport(None, "p", runs), tmp_path, False, log=lambda *_: None)
    assert [r.run_id for r in report.submitted] == ["a-s0", "b-s0", "c-s0", "a-s1", "b-s1", "c-s1"]
