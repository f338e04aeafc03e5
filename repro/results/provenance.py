"""Where and when a set of results was produced: the machine, the commit, the wall time.

``python -m repro.results.provenance OUT.json`` records the machine a campaign runs on (written
before its first run); :func:`runs_provenance` reads the commits, hosts and wall time (first
submission to last finish) from the run records themselves, for the report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from ..rundir import FINISHED, RunDir, Status, git_commit, read_json


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    import torch

    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def record(path: str | Path, command: str = "") -> dict:
    """Write ``path`` (atomically): machine, commit and start time of a campaign."""
    info = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "git": git_commit(),
            "machine": machine()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
    return info


def utc(ts: float) -> str:
    """A POSIX time as the report and the README print it."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def runs_provenance(tables: Iterable[tuple[Path, pd.DataFrame, dict[str, RunDir]]]) -> dict:
    """Commits, hosts, dates and wall time of the finished runs (done or diverged) of one profile, from their
    records. ``tables``: per table, its runs root, its runs (``results.collect``: run_id, status)
    and their directories by run id."""
    commits, hosts, submitted, finished, train_s, done, total = {}, set(), [], [], 0.0, 0, 0
    diverged = 0
    machines = {}
    for root, runs, run_dirs in tables:
        total += len(runs)
        m = read_json(root / "machine.json")
        if m:
            machines[str(root)] = m
        for rec in runs.itertuples():
            if rec.status not in FINISHED:
                continue
            done += rec.status == Status.DONE
            diverged += rec.status == Status.DIVERGED
            d = run_dirs[rec.run_id]
            final = d.read_final() or {}
            job = d.read_job() or {}
            git = final.get("git") or {}
            if git.get("commit"):
                key = git["commit"][:12] + (" (uncommitted changes)" if git.get("dirty") else "")
                commits[key] = commits.get(key, 0) + 1
            if job.get("host"):
                hosts.add(job["host"])
            if job.get("submitted"):
                submitted.append(float(job["submitted"]))
            if final.get("finished"):
                finished.append(dt.datetime.strptime(final["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp())
            train_s += float(final.get("train_wall_s") or 0.0)
    out = {"runs_done": done, "runs_diverged": diverged, "runs": total, "commits": commits, "hosts": sorted(hosts), "machines": machines,
           "train_hours": train_s / 3600}
    if submitted and finished:
        out["first_submitted"] = utc(min(submitted))
        out["last_finished"] = utc(max(finished))
        out["wall_hours"] = (max(finished) - min(submitted)) / 3600
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m repro.results.provenance OUT.json [COMMAND...]")
    print(json.dumps(record(sys.argv[1], " ".join(sys.argv[2:])), indent=2))
