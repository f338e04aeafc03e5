"""Run every benchmark at its small default size (about 10 minutes on 2 CPU cores).

    python bench/run_all.py [--only momentum_bn,floor] [--threads 1]

Each benchmark runs in its own process, one after another (never two at once: they would
time each other). The exit status is that of the first benchmark that failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
NAMES = ["momentum_bn", "devices", "augment", "options", "floor", "peer_lightly", "sec_per_iter", "data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {NAMES}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (per process), passed on; each script has its own default")
    args = parser.parse_args()
    scripts = [f"bench_{name}.py" for name in args.only.split(",")] + ["gpu_check.py"]
    status = 0
    for script in scripts:
        print(f"\n===== {script} =====", flush=True)
        start = time.perf_counter()
        threads = ["--threads", str(args.threads)] if args.threads and script != "gpu_check.py" else []
        rc = subprocess.call([sys.executable, str(BENCH / script), *threads])
        print(f"===== {script}: exit {rc}, {time.perf_counter() - start:.0f} s =====", flush=True)
        status = status or rc
    sys.exit(status)


if __name__ == "__main__":
    main()
