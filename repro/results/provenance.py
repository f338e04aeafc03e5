"""Where and when a set of results was produced: the machine, the commit, the wall time.

``python -m repro.results.provenance OUT.json`` records the machine a campaign runs on (written
before its first run); the report adds the wall time from the run records themselves
(first submission to last finish).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from ..atomic import atomic_write

from ..rundir import git_commit


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


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m repro.results.provenance OUT.json [COMMAND...]")
    print(json.dumps(record(sys.argv[1], " ".join(sys.argv[2:])), indent=2))
