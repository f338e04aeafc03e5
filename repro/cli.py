"""``python -m repro``: run a table, show its status, render it.

    python -m repro run t01 --profile local --cluster local
    python -m repro status t01 --profile local
    python -m repro render t01 --profile local
    python -m repro list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError
from .data.datasets import DatasetNotFound

USER_ERRORS = (ConfigError, DatasetNotFound, CheckpointError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="table id (t01) or a table file")
    p.add_argument("--profile", default="local", help="scale: paper, local, smoke (see the table file)")
    p.add_argument("--runs", default="runs", help="root of the run directories (default: runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="submit the unfinished runs of a table, wait (local), render")
    _common(run)
    run.add_argument("--cluster", default="local", help="cluster profile in slurm/: local, debug, slurm, ...")
    run.add_argument("--data-root", default=None, help="dataset folder (STL10 / ImageNet profiles)")
    run.add_argument("--rerun-failed", action="store_true", help="resubmit runs that failed before")
    run.add_argument("--no-wait", action="store_true", help="return after submitting")
    status = sub.add_parser("status", help="state, last step and loss of every run")
    _common(status)
    render = sub.add_parser("render", help="collect run directories and write tables/out/")
    _common(render)
    render.add_argument("--out", default=None, help="output folder (default: tables/out)")
    sub.add_parser("list", help="list the tables and their profiles")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; running ones resume from their last checkpoint", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from . import results
    from .grid import TABLES_DIR, load_table

    if args.command == "list":
        for path in sorted(TABLES_DIR.glob("t*.yaml")):
            table = load_table(path)
            print(f"{table.name:<5} {table.title}  [profiles: {', '.join(table.profiles)}]")
        return 0
    if args.command == "status":
        print("\n".join(results.status_lines(args.table, args.profile, args.runs)))
        return 0
    if args.command == "render":
        paths = results.render(args.table, args.profile, args.runs, **({"out_dir": args.out} if args.out else {}))
        print(Path(paths["md"]).read_text())
        return 0
    from .launch import launch, load_cluster, wait

    report = launch(args.table, args.profile, args.cluster, args.runs, data_root=args.data_root,
                    rerun_failed=args.rerun_failed)
    failures = []
    if report.jobs and not args.no_wait and load_cluster(args.cluster).executor != "slurm":
        print("waiting for the runs (progress: runs/.submitit/<job>/*.out; python -m repro status ...)", flush=True)
        failures = wait(report, Path(args.runs).resolve())
    elif report.jobs:
        print(f"submitted {len(report.jobs)} runs; follow them with: python -m repro status {args.table} "
              f"--profile {args.profile}")
    paths = results.render(args.table, args.profile, args.runs)
    print(Path(paths["md"]).read_text())
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    if failures or report.skipped_failed:
        print(f"error: {len(failures) + len(report.skipped_failed)} runs failed (see status)", file=sys.stderr)
        return 1
    return 0
