"""CPU time of one look at a grid's runs, as the waiting launcher's live view takes it every
second: every run's status (its records read) and progress (the last line of metrics.jsonl).

    .venv/bin/python bench/bench_status.py [RUNS_DIR]   # default: results/cpu/t01/cpu-mnist

The first look parses every record; later looks reuse what read well (until a file changes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from repro.launch.progress import read_progress
from repro.rundir import RunDir, run_states


def look(dirs: list[RunDir]) -> None:
    for d, state in zip(dirs, run_states(dirs)):  # the directories alone: no scheduler asked
        read_progress(d.path.name, d, state)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu/t01/cpu-mnist")
    dirs = [RunDir(p) for p in sorted(p for p in root.iterdir() if p.is_dir())]
    if not dirs:
        sys.exit(f"no run directories in {root}: pass a folder of runs (for example results/cpu/t01/cpu-mnist)")
    t = time.process_time()
    look(dirs)
    first = time.process_time() - t
    n = 20
    t = time.process_time()
    for _ in range(n):
        look(dirs)
    later = (time.process_time() - t) / n
    print(f"{len(dirs)} runs in {root}: first look {first * 1e3:.1f} ms of CPU, later looks {later * 1e3:.1f} ms each")


if __name__ == "__main__":
    main()
