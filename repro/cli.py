"""``python -m repro``: run a table, show its status, render it.

    python -m repro run t01 --profile local --cluster local
    python -m repro run t01 --profile smoke --cluster slurm --wait
    python -m repro run t01 --profile paper --cluster mycluster --data-root /data/stl10
    python -m repro status t01 --profile local
    python -m repro render t01 --profile local
    python -m repro report --runs runs --runs results/cpu --out tables/out
    python -m repro curves t01 --profile local
    python -m repro sbatch t01 --profile paper --cluster mycluster
    python -m repro list
    python -m repro preflight t01 --profile paper [--data-root /data/stl10]
    python -m repro compare t01 --profile cpu-mnist --against cpu-mnist-bf16 --runs results/cpu
    python -m repro compare t01 --profile cpu-8x4 --variant bn-mbn:bn-mbn-biased --runs results/cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .train.checkpoint import CheckpointError
from .config import ConfigError
from .data.datasets import DatasetNotFound
from .grid import PAPER_PROFILE

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
    run.add_argument("--wait", dest="wait", action="store_true", default=None,
                     help="wait for the jobs to end (the default, except on SLURM clusters)")
    run.add_argument("--no-wait", dest="wait", action="store_false", help="return after submitting")
    run.add_argument("--yes", action="store_true",
                     help="submit a paper-scale grid without asking (its GPU-hours are printed first)")
    run.add_argument("--out", default=None, help="output folder of the rendered table (default: tables/out)")
    run.add_argument("--progress-every", type=float, default=30.0,
                     help="without a terminal, seconds between progress lines (default: 30)")
    status = sub.add_parser("status", help="state, last step and loss of every run")
    _common(status)
    render = sub.add_parser("render", help="collect run directories and write tables/out/")
    _common(render)
    render.add_argument("--out", default=None, help="output folder (default: tables/out)")
    report = sub.add_parser("report", help="every table, Figure 3 and the claims' verdicts (report.md, report.html)")
    report.add_argument("--runs", action="append", default=None,
                        help="a root of run directories; repeat for several, searched in order (default: runs)")
    report.add_argument("--profile", action="append", default=None, dest="profiles",
                        help="only these profiles (repeatable; default: every profile with results except smoke)")
    report.add_argument("--out", default="tables/out", help="output folder (default: tables/out)")
    curves = sub.add_parser("curves", help="the table's training curves (loss, kNN against step) as one PNG")
    _common(curves)
    curves.add_argument("--out", default="figures/out", help="output folder (default: figures/out)")
    sbatch = sub.add_parser("sbatch", help="print the sbatch file(s) a SLURM launch of the table would submit")
    _common(sbatch)
    sbatch.add_argument("--cluster", default="slurm", help="a SLURM cluster profile in slurm/ (default: slurm)")
    sub.add_parser("list", help="list the tables and their profiles")
    pre = sub.add_parser("preflight", help="check every row of a profile on this machine before a cluster sees it")
    pre.add_argument("table", help="table id (t01) or a table file")
    pre.add_argument("--profile", default=PAPER_PROFILE, help="scale (default: paper)")
    pre.add_argument("--data-root", default=None, help="dataset folder to check (STL10 / ImageNet profiles)")
    pre.add_argument("--no-loop", action="store_true",
                     help="only build, price and step each row once (skip the 2-process loop and the probe pass)")
    cmp = sub.add_parser("compare", help="runs that differ by one option, paired by seed: the same rows at two "
                                         "profiles (bf16 against fp32), or rows against their variants")
    _common(cmp)
    which = cmp.add_mutually_exclusive_group(required=True)
    which.add_argument("--against", help="the profile compared with --profile (the base)")
    which.add_argument("--variant", action="append", metavar="ROW:VARIANT",
                       help="a row of --profile and the row that differs from it by one setting "
                            "(repeat for several), e.g. bn-mbn:bn-mbn-biased")
    cmp.add_argument("--out", default=None, help="also write the comparison (markdown) to this file")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; running ones resume from their last checkpoint", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    return _COMMANDS[args.command](args)


def _cmd_preflight(args) -> int:
    from .launch.preflight import preflight

    preflight(args.table, args.profile, data_root=args.data_root, loop=not args.no_loop)
    return 0


def _cmd_compare(args) -> int:
    from .grid import load_table
    from .launch import slurm
    from .results.compare import compare_profiles, compare_variants

    table = load_table(args.table)
    if args.against is not None:
        text = compare_profiles(table, args.profile, args.against, args.runs, out=args.out,
                                scheduler=slurm.slurm_states)
    else:
        pairs = [v.split(":") for v in args.variant]
        bad = next((v for v, p in zip(args.variant, pairs) if len(p) != 2 or not all(p)), None)
        if bad is not None:
            raise ConfigError(f"--variant {bad!r}: expected ROW:VARIANT, e.g. bn-mbn:bn-mbn-biased")
        text = compare_variants(table, args.profile, dict(pairs), args.runs, out=args.out,
                                scheduler=slurm.slurm_states)
    print(text, end="")
    if args.out:
        print(f"written: {args.out}")
    return 0


def _cmd_list(args) -> int:
    from .grid import TABLES_DIR, load_table

    for path in sorted(TABLES_DIR.glob("t*.yaml")):
        table = load_table(path)
        print(f"{table.name:<5} {table.title}  [profiles: {', '.join(table.profiles)}]")
    return 0


def _cmd_status(args) -> int:
    from .grid import load_table
    from .launch import slurm, status

    print(status.status_text(load_table(args.table), args.profile, args.runs, slurm.slurm_states))
    return 0


def _cmd_report(args) -> int:
    from .launch import slurm
    from .results.report import build

    profiles = args.profiles
    paths = build(args.runs or ["runs"], args.out, profiles, exclude=() if profiles else ("smoke",),
                  scheduler=slurm.slurm_states)
    print(f"written: {paths['md']}, {paths['html']}")
    return 0


def _cmd_render(args) -> int:
    from .grid import load_table
    from .launch import slurm
    from .results import collect as results

    paths = results.render(load_table(args.table), args.profile, args.runs, scheduler=slurm.slurm_states,
                           **({"out_dir": args.out} if args.out else {}))
    print(Path(paths["md"]).read_text())
    return 0


def _cmd_curves(args) -> int:
    from .grid import load_table
    from .results.collect import output_stem
    from .results.curves import draw_curves

    table = load_table(args.table)
    path = draw_curves(table, args.profile, args.runs,
                       Path(args.out) / f"curves_{output_stem(table)}_{args.profile}.png")
    if path is None:
        print(f"error: no run of {table.name} at profile {args.profile} under {args.runs} has logged a step yet",
              file=sys.stderr)
        return 1
    print(f"written: {path}")
    return 0


def _cmd_sbatch(args) -> int:
    from .grid import load_table

    return _print_sbatch(load_table(args.table), args.profile, args.cluster, args.runs)


def _cmd_run(args) -> int:
    """``run``: submit the table's unfinished runs, wait for them (locally), render the table.

    The table is loaded once here and handed down: to the launcher, which plans its runs once,
    and with those runs to the rendering."""
    from .grid import load_table
    from .launch import slurm
    from .launch.cluster import load_cluster
    from .launch.submit import launch
    from .results import collect as results

    table = load_table(args.table)
    confirm = None
    if args.profile == PAPER_PROFILE:
        confirm = lambda runs: _confirm_cost(table, runs, assume_yes=args.yes)  # noqa: E731
    report = launch(table, args.profile, args.cluster, args.runs, data_root=args.data_root,
                    rerun_failed=args.rerun_failed, confirm=confirm)
    if report.declined:
        print("nothing submitted", file=sys.stderr)
        return 1
    on_slurm = load_cluster(args.cluster).executor == "slurm"
    waiting = args.wait if args.wait is not None else not on_slurm
    failures = _follow(args, report) if waiting else []
    if not waiting and report.jobs:
        print(f"submitted {len(report.jobs)} runs; follow them with: python -m repro status {args.table} "
              f"--profile {args.profile} --runs {args.runs}")
    paths, kept = results.render_unless_less_complete(
        table, args.profile, args.runs, scheduler=slurm.slurm_states, runs=report.runs,
        **({"out_dir": args.out} if args.out else {}))
    print(Path(paths["md"]).read_text() if not kept else kept)
    if not kept:
        print(f"written: {', '.join(str(p) for p in paths.values())}")
    if not waiting:  # --no-wait (the default on SLURM): submitted, not finished
        if failures or report.skipped_failed:
            print(f"error: {len(failures) + len(report.skipped_failed)} runs failed (see status)", file=sys.stderr)
            return 1
        return 0
    return _check_complete(report, Path(args.runs).resolve())


def _follow(args, report) -> list:
    """Wait for the submitted (and already queued) runs with a live view; returns the failures."""
    from .launch.progress import LiveView
    from .launch.submit import wait

    if not (report.jobs or report.skipped_active):
        return []
    found = f", {len(report.skipped_active)} found queued or running" if report.skipped_active else ""
    print(f"waiting for {len(report.jobs) + len(report.skipped_active)} runs ({len(report.jobs)} submitted{found}; "
          f"logs: {Path(args.runs) / '.submitit'}/<job>/; python -m repro status {args.table} "
          f"--profile {args.profile} --runs {args.runs})", flush=True)
    return wait(report, Path(args.runs).resolve(),
                view=LiveView(report.name, sys.stdout, interval_s=args.progress_every))


def _check_complete(report, runs_root: Path) -> int:
    """0 when every run of the table has finished (done, or diverged: a result too); else 1,
    listing the others with their state."""
    from .launch import slurm
    from .rundir import FINISHED, RunDir, run_states

    states = run_states([RunDir.of(r, runs_root) for r in report.runs], slurm.slurm_states)
    missing = [(r, s) for r, s in zip(report.runs, states) if s.status not in FINISHED]
    if not missing:
        return 0
    failed = sum(s.status.ended for _, s in missing)
    print(f"error: the table is incomplete: {len(missing)}/{len(report.runs)} runs not done "
          f"({failed} runs failed; see status):", file=sys.stderr)
    for r, s in missing:
        print(f"  {r.run_id}: {s.status}{': ' + s.error if s.error else ''}", file=sys.stderr)
    return 1


_COMMANDS = {"preflight": _cmd_preflight, "list": _cmd_list, "status": _cmd_status, "report": _cmd_report,
             "render": _cmd_render, "curves": _cmd_curves, "sbatch": _cmd_sbatch, "run": _cmd_run,
             "compare": _cmd_compare}


def _print_sbatch(table, profile: str, cluster_name: str, runs_root: str) -> int:
    """Every run of the grid goes in one array per world size: print each array's sbatch file."""
    from .launch.cluster import load_cluster, sbatch_text
    from .launch.submit import job_arrays, job_name, plan

    cluster, runs = load_cluster(cluster_name), plan(table, profile)
    root = Path(runs_root).resolve()
    for world_size, group in job_arrays(runs):
        text = sbatch_text(cluster, root / ".submitit" / "%j", world_size, code_dir=root / ".code" / "<snapshot>",
                           job_name=job_name(table, profile), array=len(group))
        print(f"# {len(group)} runs of {world_size} processes: {', '.join(r.run_id for r in group)}\n{text}")
    return 0


def _confirm_cost(table, runs, *, assume_yes: bool) -> bool:
    """Print what the runs of ``table`` cost in GPU-hours; ask on the terminal unless ``--yes``."""
    from .launch.cost import describe, estimate

    print(f"about to submit {len(runs)} paper-scale runs, at the paper's seconds per iteration:")
    print(describe(estimate(table, runs)), flush=True)
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError("refusing to submit a paper-scale grid without confirmation: no terminal to ask on; "
                          "pass --yes to submit it")
    return input("submit them? [y/N] ").strip().lower() in ("y", "yes")
