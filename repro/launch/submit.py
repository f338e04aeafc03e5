"""Grid -> submitit jobs (one array per table) -> run directories: plan, launch, wait.

Finished runs are skipped when relaunched; failed runs are reported and rerun only on
request. Where each piece lives: ``cluster`` (profiles, executors), ``snapshot`` (the frozen
code), ``job`` (what a job runs), ``slurm`` (the scheduler's states), ``repro.rundir`` (a run
directory's files).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path

from ..grid import Run, Table, expand, with_overrides
from ..rundir import FINISHED, UNFINISHED, RunDir, RunState, Status, run_states
from .cluster import load_cluster, make_executor
from .job import RunJob
from .progress import LiveView, read_progress
from .slurm import SLURM_ACTIVE, slurm_states
from .snapshot import snapshot_code


# How the launcher names a run whose training diverged: a result, not a failure to retry.
DIVERGED_NOTE = ("DIVERGED ({why}): recorded as the run's result at its seed, with no accuracy; a rerun "
                 "diverges again (a changed config is a new run)")


@dataclass
class LaunchReport:
    """What a launch found and what it submitted."""

    table: Table
    profile: str
    runs: list[Run]  # every run of (table, profile), as planned (with the user's data root)
    skipped_done: list[Run] = field(default_factory=list)
    skipped_failed: list[Run] = field(default_factory=list)
    skipped_active: list[Run] = field(default_factory=list)
    reused: list[Run] = field(default_factory=list)  # the same run finished in another table: records copied
    submitted: list[Run] = field(default_factory=list)
    jobs: list = field(default_factory=list)
    declined: bool = False  # the confirmation (cost of a paper-scale grid) said no
    code_dir: Path | None = None  # the snapshot the jobs run

    @property
    def name(self) -> str:
        """``t01/smoke``: the table and profile, as the launcher's lines name them."""
        return f"{self.table.name}/{self.profile}"


def plan(table: Table, profile: str, *, data_root: str | None = None) -> list[Run]:
    """The runs of (table, profile), with the user's data root."""
    runs = expand(table, profile)
    if data_root:
        # Absolute: jobs start in the code snapshot, not in the submitting directory.
        runs = [with_overrides(r, {"data": {"root": str(Path(data_root).resolve())}}) for r in runs]
    return runs


def job_arrays(runs: list[Run]) -> list[tuple[int, list[Run]]]:
    """The runs as job arrays: one per world size (processes per job), smallest first, each in
    the runs' order."""
    sizes = [r.config.processes for r in runs]
    return [(n, [r for r, k in zip(runs, sizes) if k == n]) for n in sorted(set(sizes))]


def job_name(table: Table, profile: str) -> str:
    """The name of a table's jobs on the cluster (``t01-smoke``)."""
    return f"{table.name}-{profile}"


def launch(table: Table, profile: str, cluster_name: str, runs_root: str | Path, *, data_root: str | None = None,
           rerun_failed: bool = False, confirm: Callable[[list[Run]], bool] | None = None,
           log=print) -> LaunchReport:
    """Submit the runs of (table, profile) that are not finished, one job array per world size;
    the report says which were found done, failed, queued or running, and which were submitted.

    ``confirm(runs)`` is asked before anything is written or submitted (the CLI asks for
    paper-scale grids); when it says no, nothing is submitted and ``report.declined`` is set.
    """
    from ..data.datasets import check_available

    cluster = load_cluster(cluster_name)
    runs_root = Path(runs_root).resolve()
    runs = plan(table, profile, data_root=data_root)
    # Detection's data is Detectron2's (repro/transfer/datasets.py checks it when the run starts).
    for cfg in {(r.config.data.dataset, r.config.data.root) for r in runs if r.config.task != "detection"}:
        check_available(*cfg)
    report = _sort_runs(LaunchReport(table, profile, runs), runs_root, rerun_failed, log)
    reuse_twins(report, runs_root, log)
    log(f"{report.name}: {len(runs)} runs, {len(report.skipped_done)} done"
        + (f" ({len(report.reused)} reused from other tables)" if report.reused else "") + ", "
        f"{len(report.skipped_active)} queued or running, {len(report.skipped_failed)} failed, "
        f"{len(report.submitted)} to submit on cluster {cluster_name!r}")
    if not report.submitted:
        return report
    if confirm is not None and not confirm(report.submitted):
        report.submitted, report.declined = [], True
        return report
    for run in report.submitted:
        run_dir = RunDir.of(run, runs_root)
        for path in run_dir.set_corrupt_aside():  # --rerun-failed: the run writes them again
            log(f"  {run.run_id}: {path.name[:-len('.corrupt')]} was unreadable, kept as {path}")
        run_dir.prepare(run)
    if cluster.executor != "debug":  # debug runs in this process, on the live code
        report.code_dir = snapshot_code(runs_root)
    for world_size, group in job_arrays(report.submitted):
        jobs = _submit_group(group, world_size, cluster, runs_root, report.code_dir, job_name(table, profile))
        for run, job in zip(group, jobs):
            RunDir.of(run, runs_root).write_job({
                "job_id": str(job.job_id), "cluster": cluster_name, "executor": cluster.executor,
                "submitted": time.time(), "submitit_folder": str(runs_root / ".submitit"), "host": os.uname().nodename,
                "code_dir": str(report.code_dir) if report.code_dir else None,
            })
        report.jobs.extend(zip(group, jobs))
    return report


def _sort_runs(report: LaunchReport, runs_root: Path, rerun_failed: bool, log) -> LaunchReport:
    """Which runs are done, failed (kept unless ``rerun_failed``), queued or running, or to submit.
    SLURM is asked once, for every unfinished run's job together."""
    dirs = [RunDir.of(run, runs_root) for run in report.runs]
    statuses = [d.status() for d in dirs]
    unfinished = [d for d, status in zip(dirs, statuses) if status in UNFINISHED]
    alive = dict(zip((d.path for d in unfinished), _jobs_alive(unfinished)))
    for run, run_dir, status in zip(report.runs, dirs, statuses):
        if status in FINISHED:
            report.skipped_done.append(run)
            if status == Status.DIVERGED:
                log(f"  {run.run_id}: {DIVERGED_NOTE.format(why=run_dir.diverged())}")
        elif status == Status.FAILED and not rerun_failed:
            report.skipped_failed.append(run)
            log(f"  {run.run_id}: FAILED earlier ({run_dir.first_error_line()}); rerun with --rerun-failed")
        elif status == Status.CORRUPT and not rerun_failed:
            report.skipped_failed.append(run)
            log(f"  {run.run_id}: CORRUPT: {run_dir.corrupt_error()}")
        elif alive.get(run_dir.path):
            report.skipped_active.append(run)
        else:
            report.submitted.append(run)
    # Seed by seed (rows in table order within a seed): local slots are granted in this order,
    # so a campaign interrupted on one machine leaves whole seeds, which paired statistics need.
    report.submitted.sort(key=lambda r: r.seed)
    return report


def twin_of(run: Run, runs_root: Path) -> RunDir | None:
    """A finished run of another table under ``runs_root`` with this run's config (its id's hash,
    and the saved config checked field by field), at the same profile: the same computation,
    since a run is deterministic given its config. None when there is none."""
    from ..config import config_hash, semantic_dict

    own = run.run_dir(runs_root)
    for path in sorted(runs_root.glob(f"*/{run.profile}/*-s{run.seed}-{config_hash(run.config)}")):
        twin = RunDir(path)
        if path == own or twin.status() not in FINISHED:
            continue
        if semantic_dict(twin.saved_config()) == semantic_dict(run.config):
            return twin
    return None


def reuse_twins(report: LaunchReport, runs_root: Path, log) -> None:
    """Runs to submit that never trained (no metrics, no checkpoint: new, or submitted by a
    launcher that stopped before they started) and whose twin (:func:`twin_of`) finished in
    another table are not trained again: their folder gets the twin's records (``final.json``
    and ``job.json`` with ``reused_from``, ``metrics.jsonl``, the final checkpoint, hard-linked
    where the file system allows) and they count as done. ``final.json`` is written last, so
    an interrupted copy is a run with a checkpoint at its end, which a job finishes."""
    for run in list(report.submitted):
        run_dir = RunDir.of(run, runs_root)
        if run_dir.metrics.exists() or run_dir.checkpoints.exists() or run.config.task != "pretrain":
            continue
        twin = twin_of(run, runs_root)
        if twin is None:
            continue
        source = twin.path.relative_to(runs_root).as_posix()
        run_dir.prepare(run)
        final = twin.read_final() or {}
        if twin.metrics.is_file():
            shutil.copyfile(twin.metrics, run_dir.metrics)
        for key in ("final_checkpoint", "last_good_checkpoint"):
            if final.get(key) and (twin.path / final[key]).is_file():
                _link_or_copy(twin.path / final[key], run_dir.path / final[key])
        run_dir.write_job({**(twin.read_job() or {}), "reused_from": source})
        run_dir.error.unlink(missing_ok=True)  # a previous attempt's, which failed before training
        run_dir.write_final({**final, "table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed,
                             "run_id": run.run_id, "reused_from": source})
        report.submitted.remove(run)
        report.skipped_done.append(run)
        report.reused.append(run)
        log(f"  {run.run_id}: the same config as {source}, finished: its records are reused, not trained again")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or no hard links
        shutil.copy2(src, tmp)
    tmp.replace(dst)


def _submit_group(group: list[Run], world_size: int, cluster, runs_root: Path, code_dir, job_name: str) -> list:
    """Submit runs of one world size: one job array (one job per run on the debug executor)."""
    executor = make_executor(cluster, runs_root / ".submitit" / "%j", world_size, code_dir=code_dir,
                             job_name=job_name)
    slots = None
    if cluster.executor == "local":
        threads = max(r.config.train.threads or 1 for r in group)
        slots = cluster.max_parallel_runs or max(1, (os.cpu_count() or 1) // (world_size * threads))
    job_fn = RunJob(str(runs_root), slots, tuple(r.run_id for r in group), time.time_ns())
    if cluster.executor == "debug":
        return [executor.submit(job_fn, r) for r in group]
    if cluster.executor == "local":
        with _controllers_write_to(runs_root / ".submitit" / "controllers.log"):
            return executor.map_array(job_fn, group)  # one array
    return executor.map_array(job_fn, group)  # one array


@contextlib.contextmanager
def _controllers_write_to(path: Path):
    """Start submitit's local controllers with their stdout and stderr in ``path``.

    They inherit the launcher's terminal otherwise: Ctrl-C reaches them too (which is how
    it stops the runs), and each printed its KeyboardInterrupt traceback there. The runs'
    own output goes to their logs in .submitit/<job>/ either way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _jobs_alive(run_dirs: list[RunDir]) -> list[bool]:
    """Whether the job recorded in each run's ``job.json`` may still run: SLURM asked once for
    all of them (sacct); local jobs by their process, on the host that started them."""
    infos = [d.read_job() or {} for d in run_dirs]
    slurm = slurm_states(i["job_id"] for i in infos if i.get("executor") == "slurm")
    return [slurm.get(str(i["job_id"])) in SLURM_ACTIVE if i.get("executor") == "slurm" else _process_alive(i)
            for i in infos]


def _process_alive(info: dict) -> bool:
    if info.get("executor") != "local" or info.get("host") != os.uname().nodename:
        return False
    try:
        os.kill(int(str(info["job_id"]).split("_")[0]), 0)
        return True
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- waiting


def wait(report: LaunchReport, runs_root: Path, log=print, view: LiveView | None = None,
         poll_s: float = 1.0) -> list[tuple[Run, str]]:
    """Block until the submitted jobs, and the runs of the grid found queued or running
    (``report.skipped_active``: a previous launcher's), end; return the failures (run, first
    error line).

    Our own jobs are followed through submitit; the runs found running through their
    directory and their job (local: the process; SLURM: sacct). Cancelled SLURM jobs end the
    wait too and count as failures, with that reason. ``view`` (a :class:`LiveView`) shows the
    whole grid at every poll; without one, only the end of each run is logged.
    """
    from submitit import SlurmJob

    runs_root = Path(runs_root)
    say = view.note if view is not None else log
    own = {run.run_id: job for run, job in report.jobs}
    waiting = [run for run, _ in report.jobs] + list(report.skipped_active)
    total, ended_count, failures = len(waiting), 0, []
    while waiting:
        # submitit asks sacct less and less often as a job ages; ask once for all our SLURM
        # jobs and make it look again at those that SLURM says have ended.
        states = slurm_states(job.job_id for job in own.values() if isinstance(job, SlurmJob))
        ended = {j for j, s in states.items() if s not in SLURM_ACTIVE and s != "UNKNOWN"}
        active = {j for j, s in states.items() if s in SLURM_ACTIVE}
        for run in list(waiting):
            job = own.get(run.run_id)
            error = (_ended(run, job, runs_root, ended, active) if job is not None
                     else _attached_ended(run, runs_root))
            if error is False:
                continue
            waiting.remove(run)
            ended_count += 1
            if error is None:
                why = RunDir.of(run, runs_root).diverged()
                say(f"  [{ended_count}/{total}] {run.run_id}: "
                    + (DIVERGED_NOTE.format(why=why) if why else "done"))
            else:
                failures.append((run, error))
                state = _state(run, runs_root)
                say(f"  [{ended_count}/{total}] {run.run_id}: {state.status.upper()}: {error}")
        if view is not None:
            dirs = [RunDir.of(r, runs_root) for r in report.runs]
            view.update([read_progress(r.run_id, d, s)
                         for r, d, s in zip(report.runs, dirs, run_states(dirs, slurm_states))], force=not waiting)
        if waiting:
            time.sleep(poll_s)
    if view is not None:
        view.close()
    return failures


def _state(run: Run, runs_root: Path) -> RunState:
    """The run's state, SLURM asked about its job."""
    return run_states([RunDir.of(run, runs_root)], slurm_states)[0]


def _ended(run: Run, job, runs_root: Path, slurm_ended: Set[str], slurm_active: Set[str] = frozenset()):
    """One of our submitit jobs: False while it runs, None when it ended well, else the error.

    A job that SLURM says may still run has not ended, whatever submitit's ``done()`` says: a
    requeued job keeps the result files its first attempt's tasks wrote until the new attempt
    overwrites them (its tasks also remove them as they start), and submitit counts states
    such as CONFIGURING as ended.
    """
    if job.job_id in slurm_active:
        return False
    if not job.done(force_check=job.job_id in slurm_ended):
        return False
    try:
        if job.job_id in slurm_ended and not job.paths.result_pickle.exists():
            # Killed without a result (scancel, time, memory): say so now rather
            # than after submitit's 15 s wait for a slow file system.
            raise RuntimeError(f"SLURM job {job.job_id} ended without a result")
        job.results()  # one result per task
        return None
    except Exception as e:  # noqa: BLE001 - reported, not swallowed
        return _state(run, runs_root).error or str(e).strip().splitlines()[-1]


def _attached_ended(run: Run, runs_root: Path):
    """A run another launcher submitted: False while its job may still run, None when it
    ended done, else why it did not (from its directory, or that its job is gone)."""
    state = _state(run, runs_root)
    if state.status in FINISHED:
        return None
    if state.status.ended:
        return state.error or state.status
    if _jobs_alive([RunDir.of(run, runs_root)])[0]:
        return False
    state = _state(run, runs_root)  # it may have finished since the first look
    if state.status in FINISHED:
        return None
    log = f"{runs_root / '.submitit'}/{state.job_id}/"
    return state.error or f"its job {state.job_id} ended without {RunDir.FINAL} (log: {log})"
