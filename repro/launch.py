"""Grid -> submitit jobs (one array per table) -> run directories.

Cluster facts live only in ``slurm/<name>.yaml``: ``local`` (submitit's LocalExecutor,
real processes on this machine), ``debug`` (in-process, one process) and ``slurm``.

Each run directory holds ``config.yaml`` (the resolved config, git commit, dirty flag),
``job.json`` (who runs it), ``metrics.jsonl``, ``checkpoints/``, and at the end
``final.json`` (or ``error.txt``). Finished runs are skipped when relaunched; failed runs
are reported and rerun only on request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .checkpoint import atomic_write
from .config import ConfigError, RunConfig, from_dict, load_yaml, semantic_dict, to_dict
from .grid import Run, expand, load_table, with_overrides

REPO = Path(__file__).resolve().parents[1]
CLUSTERS_DIR = REPO / "slurm"


@dataclass(frozen=True)
class Cluster:
    """A cluster profile (``slurm/<name>.yaml``)."""

    executor: Literal["local", "debug", "slurm"]
    description: str = ""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = 0  # 0: CPU processes; otherwise one process per GPU
    tasks_per_node: int | None = None  # CPU clusters: processes per node (None: all on one node)
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint and requeue
    max_parallel_runs: int | None = None  # local: runs at once (None: cores // processes per run)
    array_parallelism: int | None = None  # slurm: %N on the array
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch flags


def load_cluster(name: str) -> Cluster:
    path = Path(name) if name.endswith((".yaml", ".yml")) else CLUSTERS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CLUSTERS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown cluster profile {name!r}; known: {', '.join(known)} (files in {CLUSTERS_DIR})")
    data = load_yaml(path)
    try:
        return from_dict(Cluster, data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- run state


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_status(run_dir: Path) -> str:
    """done / failed / running / pending / new, from the run directory alone."""
    if (run_dir / "final.json").is_file():
        return "done"
    if (run_dir / "error.txt").is_file():
        return "failed"
    if (run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoints").is_dir():
        return "running"
    if (run_dir / "job.json").is_file():
        return "pending"
    return "new"


def prepare_run_dir(run: Run, runs_root: Path) -> Path:
    """Create the run directory with its resolved config, or check it matches the saved one."""
    run_dir = run.run_dir(runs_root)
    saved = run_dir / "config.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text()) or {}
        if semantic_dict(from_dict(RunConfig, old.get("config", {}))) != semantic_dict(run.config):
            raise ConfigError(f"{saved}: holds a different config than run {run.run_id}; remove the directory")
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed, "run_id": run.run_id,
           "git": git_state(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": _yaml_ready(to_dict(run.config))}
    atomic_write(saved, lambda f: f.write(yaml.safe_dump(doc, sort_keys=False).encode()))
    return run_dir


def _yaml_ready(d):
    if isinstance(d, dict):
        return {k: _yaml_ready(v) for k, v in d.items()}
    return list(d) if isinstance(d, tuple) else d


# --------------------------------------------------------------------------- the job


def _distributed_env(world_size: int) -> tuple[int, str]:
    """Export env:// variables from submitit's job environment; return (rank, job id)."""
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # called outside submitit (tests, a plain python call)
        return 0, f"pid{os.getpid()}"
    if env.num_tasks != world_size:
        raise RuntimeError(f"job has {env.num_tasks} tasks but the run needs {world_size}")
    if world_size > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return env.global_rank, str(env.job_id)


@contextlib.contextmanager
def local_slot(slots_dir: Path, slots: int, job_key: str, rank: int, run_dir: Path):
    """At most ``slots`` runs at once on this machine (LocalExecutor starts a whole array).

    Rank 0 takes a slot (a file lock, released by the OS if the process dies) and announces
    it; the other ranks of the same job wait for the announcement before joining the group.
    """
    slots_dir.mkdir(parents=True, exist_ok=True)
    granted = slots_dir / f"granted-{job_key}"
    if rank != 0:
        while not granted.exists():
            if (run_dir / "error.txt").exists() and (run_dir / "error.txt").stat().st_mtime > _STARTED:
                raise RuntimeError("rank 0 of this job failed before starting; see error.txt")
            time.sleep(0.2)
        yield
        return
    handle = None
    while handle is None:
        for i in range(slots):
            f = open(slots_dir / f"slot{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                handle = f
                break
            except BlockingIOError:
                f.close()
        else:
            time.sleep(0.5)
    try:
        granted.touch()
        yield
    finally:
        granted.unlink(missing_ok=True)
        handle.close()


_STARTED = time.time()


class PretrainJob:
    """The submitit callable: pre-train, probe, write ``final.json``.

    ``checkpoint`` makes timeouts and preemptions requeue the same job; the run then
    resumes from the last good checkpoint, which is looked up when the job STARTS (never
    baked into the submission), so a requeued job cannot restart from a stale one.
    """

    def __init__(self, runs_root: str, slots: int | None = None):
        self.runs_root = runs_root
        self.slots = slots

    def __call__(self, run: Run) -> dict:
        run_dir = run.run_dir(self.runs_root)
        rank, job_key = _distributed_env(run.config.train.world_size)
        slot = (local_slot(Path(self.runs_root) / ".slots", self.slots, job_key, rank, run_dir)
                if self.slots else contextlib.nullcontext())
        try:
            with slot:
                return self._run(run, run_dir, rank)
        except BaseException as e:
            if rank == 0 and not isinstance(e, (KeyboardInterrupt, SystemExit)):
                (run_dir / "error.txt").write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
            raise

    def _run(self, run: Run, run_dir: Path, rank: int) -> dict:
        from .probe import evaluate
        from .train import pretrain

        if rank == 0:
            (run_dir / "error.txt").unlink(missing_ok=True)  # a rerun of a failed run
        print(f"[{run.run_id}] rank {rank}: pre-training in {run_dir}", flush=True)
        summary, model = pretrain(run.config, run_dir, progress=rank == 0)
        if rank != 0:
            return summary
        t0 = time.time()
        import torch

        probe = evaluate(model, run.config, next(model.parameters()).device)
        final = {"table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed, "run_id": run.run_id,
                 **summary, **probe, "probe_wall_s": time.time() - t0, "git": git_state(),
                 "torch": torch.__version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(run_dir / "final.json", final)
        print(f"[{run.run_id}] done: linear top-1 {probe['top1']:.2f}, kNN top-1 {probe['knn_top1']:.2f}", flush=True)
        return final

    def checkpoint(self, run: Run):
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainJob(self.runs_root, self.slots), run)


# --------------------------------------------------------------------------- launching


def _layout(world_size: int, cluster: Cluster) -> tuple[int, int]:
    """(nodes, tasks per node) for ``world_size`` processes on ``cluster``."""
    per_node = cluster.gpus_per_node or cluster.tasks_per_node or world_size
    per_node = min(per_node, world_size)
    return math.ceil(world_size / per_node), per_node


def make_executor(cluster: Cluster, folder: Path, world_size: int):
    import submitit

    if cluster.executor == "debug":
        if world_size > 1:
            raise ConfigError(
                f"the debug cluster runs one in-process task, but these runs need {world_size} processes: "
                f"use --cluster local"
            )
        return submitit.DebugExecutor(folder)
    nodes, per_node = _layout(world_size, cluster)
    if cluster.executor == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(tasks_per_node=world_size, timeout_min=cluster.timeout_min,
                             gpus_per_node=world_size if cluster.gpus_per_node else 0)
        return ex
    ex = submitit.SlurmExecutor(folder)
    params = dict(
        nodes=nodes, ntasks_per_node=per_node, cpus_per_task=cluster.cpus_per_task,
        time=cluster.timeout_min, signal_delay_s=cluster.signal_delay_s,
        partition=cluster.partition, account=cluster.account, qos=cluster.qos, constraint=cluster.constraint,
        gpus_per_node=cluster.gpus_per_node or None, mem=f"{int(cluster.mem_gb)}G" if cluster.mem_gb else None,
        array_parallelism=cluster.array_parallelism, additional_parameters=dict(cluster.sbatch) or None,
    )
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


@dataclass
class LaunchReport:
    runs: list[Run]
    skipped_done: list[Run] = field(default_factory=list)
    skipped_failed: list[Run] = field(default_factory=list)
    skipped_active: list[Run] = field(default_factory=list)
    submitted: list[Run] = field(default_factory=list)
    jobs: list = field(default_factory=list)


def plan(table_name: str, profile: str, *, data_root: str | None = None) -> list[Run]:
    table = load_table(table_name)
    runs = expand(table, profile)
    if data_root:
        runs = [with_overrides(r, {"data": {"root": str(data_root)}}) for r in runs]
    return runs


def launch(table_name: str, profile: str, cluster_name: str, runs_root: str | Path, *, data_root: str | None = None,
           rerun_failed: bool = False, log=print) -> LaunchReport:
    """Submit the runs of (table, profile) that are not finished, as one job array."""
    from .data.datasets import check_available

    cluster = load_cluster(cluster_name)
    runs_root = Path(runs_root).resolve()
    runs = plan(table_name, profile, data_root=data_root)
    for cfg in {(r.config.data.dataset, r.config.data.root) for r in runs}:
        check_available(*cfg)
    report = LaunchReport(runs)
    for run in runs:
        run_dir = run.run_dir(runs_root)
        status = run_status(run_dir)
        if status == "done":
            report.skipped_done.append(run)
        elif status == "failed" and not rerun_failed:
            report.skipped_failed.append(run)
            first = (run_dir / "error.txt").read_text().splitlines()[0]
            log(f"  {run.run_id}: FAILED earlier ({first}); rerun with --rerun-failed")
        elif status in ("running", "pending") and _job_alive(run_dir):
            report.skipped_active.append(run)
        else:
            prepare_run_dir(run, runs_root)
            report.submitted.append(run)
    log(f"{table_name}/{profile}: {len(runs)} runs, {len(report.skipped_done)} done, "
        f"{len(report.skipped_active)} queued or running, {len(report.skipped_failed)} failed, "
        f"{len(report.submitted)} to submit on cluster {cluster_name!r}")
    if not report.submitted:
        return report
    for world_size in sorted({r.config.train.world_size for r in report.submitted}):
        group = [r for r in report.submitted if r.config.train.world_size == world_size]
        folder = runs_root / ".submitit" / "%j"
        executor = make_executor(cluster, folder, world_size)
        slots = None
        if cluster.executor == "local":
            threads = max(r.config.train.threads or 1 for r in group)
            slots = cluster.max_parallel_runs or max(1, (os.cpu_count() or 1) // (world_size * threads))
        job_fn = PretrainJob(str(runs_root), slots)
        if cluster.executor == "debug":
            jobs = [executor.submit(job_fn, r) for r in group]
        else:
            jobs = executor.map_array(job_fn, group)  # one array
        for run, job in zip(group, jobs):
            write_json(run.run_dir(runs_root) / "job.json", {
                "job_id": str(job.job_id), "cluster": cluster_name, "executor": cluster.executor,
                "submitted": time.time(), "submitit_folder": str(runs_root / ".submitit"), "host": os.uname().nodename,
            })
        report.jobs.extend(zip(group, jobs))
    return report


def _job_alive(run_dir: Path) -> bool:
    """Whether the job recorded in ``job.json`` may still run (SLURM: ask; local: its process)."""
    info = read_json(run_dir / "job.json")
    if not info:
        return False
    if info.get("executor") == "slurm":
        return slurm_state(info["job_id"]) in SLURM_ACTIVE
    if info.get("executor") == "local" and info.get("host") == os.uname().nodename:
        pid = str(info["job_id"]).split("_")[0]
        try:
            os.kill(int(pid), 0)
            return True
        except (OSError, ValueError):
            return False
    return False


SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}


def slurm_state(job_id: str) -> str:
    """The job's SLURM state from sacct (UNKNOWN when SLURM cannot say)."""
    try:
        out = subprocess.run(["sacct", "-j", str(job_id), "-n", "-X", "-P", "-o", "State"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    return out[0].split()[0] if out else "UNKNOWN"


def wait(report: LaunchReport, runs_root: Path, log=print) -> list[tuple[Run, str]]:
    """Block until the submitted jobs end; return the failures (run, first error line)."""
    failures = []
    pending = list(report.jobs)
    done = 0
    while pending:
        for run, job in list(pending):
            if job.done():
                pending.remove((run, job))
                done += 1
                try:
                    job.results()  # one result per task
                    log(f"  [{done}/{len(report.jobs)}] {run.run_id}: done")
                except Exception as e:  # noqa: BLE001 - reported, not swallowed
                    err = run.run_dir(runs_root) / "error.txt"
                    first = err.read_text().splitlines()[0] if err.is_file() else str(e).strip().splitlines()[-1]
                    failures.append((run, first))
                    log(f"  [{done}/{len(report.jobs)}] {run.run_id}: FAILED: {first}")
        if pending:
            time.sleep(1.0)
    return failures
