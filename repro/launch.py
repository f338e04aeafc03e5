"""Grid -> submitit jobs (one array per table) -> run directories.

Cluster facts live only in ``slurm/<name>.yaml``: ``local`` (submitit's LocalExecutor,
real processes on this machine), ``debug`` (in-process, one process), ``slurm`` (any SLURM
cluster, partition from its default), ``ci`` (the single-node cluster of ``.ci/slurm``) and
``example-gpu`` (8 GPUs per node, to copy).

The code is frozen at submission: the launcher copies the ``repro`` package and the table
files (``tables/*.yaml``: a transfer job expands its pre-training table when it starts) into
``<runs>/.code/<hash>/`` and the jobs run from that copy, so editing the tree after submitting
changes no queued, running or requeued job.

Each run directory holds ``config.yaml`` (the resolved config, git commit, dirty flag),
``job.json`` (who runs it), ``metrics.jsonl``, ``checkpoints/``, and at the end
``final.json`` (or ``error.txt``). Finished runs are skipped when relaunched; failed runs
are reported and rerun only on request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .checkpoint import atomic_write
from .config import ConfigError, RunConfig, from_dict, load_yaml, run_semantics, to_dict
from .grid import Run, expand, load_table, with_overrides
from .tasks import TASKS, tasks_per_job

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
CLUSTERS_DIR = REPO / "slurm"
CODE_RECORD = "code.json"  # in a code snapshot: its hash and the git state it was taken from


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
    setup: list[str] = field(default_factory=list)  # slurm: shell lines before srun (module load ...)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch flags ({flag: value or true})


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
    """Commit and dirty flag of the code that runs: a snapshot answers from its record."""
    record = read_json(REPO / CODE_RECORD)
    if record is not None:
        return {"commit": record.get("commit"), "dirty": record.get("dirty"), "code": record.get("code")}

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
        if run_semantics(from_dict(RunConfig, old.get("config", {}))) != run_semantics(run.config):
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

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # a process group made by the caller
        return dist.get_rank(), f"pid{os.getppid()}"
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
    """The submitit callable: run the task (``repro.tasks``: pre-train and probe, fine-tune,
    or detection), write ``final.json``.

    ``checkpoint`` makes timeouts and preemptions requeue the same job; the run then
    resumes from the last good checkpoint, which is looked up when the job STARTS (never
    baked into the submission), so a requeued job cannot restart from a stale one.
    """

    def __init__(self, runs_root: str, slots: int | None = None):
        self.runs_root = runs_root
        self.slots = slots

    def __call__(self, run: Run) -> dict:
        run_dir = run.run_dir(self.runs_root)
        rank, job_key = _distributed_env(tasks_per_job(run.config))
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
        finished = read_json(run_dir / "final.json")
        if finished is not None:  # requeued after the end (a kill that lost the race with the last step)
            print(f"[{run.run_id}] rank {rank}: already finished, nothing to do", flush=True)
            return finished
        if rank == 0:
            (run_dir / "error.txt").unlink(missing_ok=True)  # a rerun of a failed run
        print(f"[{run.run_id}] rank {rank}: {run.config.task} in {run_dir} (code: {PACKAGE})", flush=True)
        result = TASKS[run.config.task](run, run_dir, Path(self.runs_root), rank)
        if rank != 0:
            return result
        import torch

        final = {"table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed, "run_id": run.run_id,
                 "task": run.config.task, **result, "git": git_state(), "torch": torch.__version__,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(run_dir / "final.json", final)
        print(f"[{run.run_id}] done", flush=True)
        return final

    def checkpoint(self, run: Run):
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainJob(self.runs_root, self.slots), run)


# --------------------------------------------------------------------------- frozen code


def _snapshot_files() -> list[Path]:
    """What a job reads from the tree: the ``repro`` package, as ``git archive`` would ship
    it (no caches), and the table files beside it (``tables/*.yaml``, not ``tables/out/``)."""
    package = [p for p in PACKAGE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")]
    return sorted(package + [p for p in (REPO / "tables").glob("*.yaml") if p.is_file()])


def snapshot_code(runs_root: Path) -> Path:
    """Copy the ``repro`` package and the table files into ``<runs>/.code/<hash>/`` once;
    return that folder.

    The hash covers every file's path and bytes, so the same code is copied once and any
    edit, to the code or to a table file, gives a new snapshot: a queued job keeps the
    tables it was submitted with (a transfer job expands its pre-training table when it
    starts, and then finds that run's latest checkpoint). The copy appears atomically
    (written aside, then renamed) and records the git state it was taken from, which the job
    reports as its own.
    """
    # Read each file once: what is hashed is what is copied, even if the tree changes meanwhile.
    contents = {path.relative_to(REPO).as_posix(): path.read_bytes() for path in _snapshot_files()}
    digest = hashlib.sha256()
    for name, data in contents.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    code = digest.hexdigest()[:16]
    dest = Path(runs_root) / ".code" / code
    if (dest / CODE_RECORD).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{code}."))
    try:
        os.chmod(tmp, 0o755)
        for name, data in contents.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        write_json(tmp / CODE_RECORD, {"code": code, **git_state(), "source": str(PACKAGE),
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / CODE_RECORD).is_file():  # not a concurrent launcher that won the rename
            raise
    return dest


def frozen_python(code_dir: Path) -> str:
    """The job's python command: started in the snapshot, with the snapshot first on the path.

    submitit runs ``<python> -u -m submitit.core._submit FOLDER`` and unpickles our callable
    by reference (``repro.launch.PretrainJob``), so ``import repro`` must find the snapshot:
    ``-m`` puts the working directory first on ``sys.path`` (hence the ``cd``, which also keeps
    the submitting directory's ``repro/`` out), and PYTHONPATH carries it to any subprocess.
    The editable install's finder comes after both. POSIX sh, as ``env -C`` is GNU only.
    """
    script = 'cd "$0" && export PYTHONPATH="$0${PYTHONPATH:+:$PYTHONPATH}" && exec "$@"'
    return " ".join(shlex.quote(a) for a in ("sh", "-c", script, str(code_dir), sys.executable))


# --------------------------------------------------------------------------- launching


def _layout(world_size: int, cluster: Cluster) -> tuple[int, int]:
    """(nodes, tasks per node) for ``world_size`` processes on ``cluster``.

    One task per GPU on GPU clusters: 64 processes on 8-GPU nodes are 8 nodes x 8 tasks.
    """
    per_node = cluster.gpus_per_node or cluster.tasks_per_node or world_size
    per_node = min(per_node, world_size)
    nodes = math.ceil(world_size / per_node)
    if nodes * per_node != world_size:
        raise ConfigError(f"{world_size} processes do not fill whole nodes of {per_node}: "
                          f"choose a world size that is a multiple of {per_node}")
    return nodes, per_node


def slurm_parameters(cluster: Cluster, world_size: int, job_name: str = "repro") -> dict[str, Any]:
    """The sbatch parameters (submitit's names) of runs of ``world_size`` processes on ``cluster``."""
    nodes, per_node = _layout(world_size, cluster)
    params = dict(
        job_name=job_name, nodes=nodes, ntasks_per_node=per_node, cpus_per_task=cluster.cpus_per_task,
        time=cluster.timeout_min, signal_delay_s=cluster.signal_delay_s,
        partition=cluster.partition, account=cluster.account, qos=cluster.qos, constraint=cluster.constraint,
        gpus_per_node=cluster.gpus_per_node or None, mem=f"{int(cluster.mem_gb)}G" if cluster.mem_gb else None,
        array_parallelism=cluster.array_parallelism, setup=list(cluster.setup) or None,
        additional_parameters=dict(cluster.sbatch) or None,
    )
    return {k: v for k, v in params.items() if v is not None}


def make_executor(cluster: Cluster, folder: Path, world_size: int, *, code_dir: Path | None = None,
                  job_name: str = "repro"):
    """A submitit executor for runs of ``world_size`` processes; jobs run ``code_dir`` if given."""
    import submitit

    if cluster.executor == "debug":
        if world_size > 1:
            raise ConfigError(
                f"the debug cluster runs one in-process task, but these runs need {world_size} processes: "
                f"use --cluster local"
            )
        return submitit.DebugExecutor(folder)
    _layout(world_size, cluster)  # refuses a world size that does not fill whole nodes
    python = frozen_python(code_dir) if code_dir is not None else None
    if cluster.executor == "local":
        ex = submitit.LocalExecutor(folder, python=python)
        ex.update_parameters(tasks_per_node=world_size, timeout_min=cluster.timeout_min,
                             gpus_per_node=world_size if cluster.gpus_per_node else 0)
        return ex
    ex = submitit.SlurmExecutor(folder, python=python)
    ex.update_parameters(**slurm_parameters(cluster, world_size, job_name))
    return ex


def sbatch_text(cluster: Cluster, folder: Path, world_size: int, *, code_dir: Path | None = None,
                job_name: str = "repro", array: int | None = None) -> str:
    """The sbatch file that submitting an array of ``array`` runs writes, without submitting.

    Written by submitit's own sbatch writer from the executor's parameters, so it needs no
    cluster (submitit's SlurmExecutor refuses to exist where ``srun`` is not on PATH). The
    command line is the executor's: ``<python> -u -m submitit.core._submit <folder>``, with
    the frozen-code python. A test on a real cluster checks that it equals the executor's.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    if cluster.executor != "slurm":
        raise ConfigError(f"cluster profile executor is {cluster.executor!r}: only SLURM clusters have an sbatch file")
    python = frozen_python(code_dir) if code_dir is not None else shlex.quote(sys.executable)
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    params = slurm_parameters(cluster, world_size, job_name)
    if array is not None:
        params["map_count"] = array  # what map_array sets for an array of this size
    return _make_sbatch_string(command=command, folder=folder, **params)


@dataclass
class LaunchReport:
    runs: list[Run]
    skipped_done: list[Run] = field(default_factory=list)
    skipped_failed: list[Run] = field(default_factory=list)
    skipped_active: list[Run] = field(default_factory=list)
    submitted: list[Run] = field(default_factory=list)
    jobs: list = field(default_factory=list)
    declined: bool = False  # the confirmation (cost of a paper-scale grid) said no
    code_dir: Path | None = None  # the snapshot the jobs run


def plan(table_name: str, profile: str, *, data_root: str | None = None) -> list[Run]:
    table = load_table(table_name)
    runs = expand(table, profile)
    if data_root:
        # Absolute: jobs start in the code snapshot, not in the submitting directory.
        runs = [with_overrides(r, {"data": {"root": str(Path(data_root).resolve())}}) for r in runs]
    return runs


def launch(table_name: str, profile: str, cluster_name: str, runs_root: str | Path, *, data_root: str | None = None,
           rerun_failed: bool = False, confirm: Callable[[list[Run]], bool] | None = None,
           log=print) -> LaunchReport:
    """Submit the runs of (table, profile) that are not finished, as one job array.

    ``confirm(runs)`` is asked before anything is written or submitted (the CLI asks for
    paper-scale grids); when it says no, nothing is submitted and ``report.declined`` is set.
    """
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
            report.submitted.append(run)
    log(f"{runs[0].table if runs else table_name}/{profile}: {len(runs)} runs, {len(report.skipped_done)} done, "
        f"{len(report.skipped_active)} queued or running, {len(report.skipped_failed)} failed, "
        f"{len(report.submitted)} to submit on cluster {cluster_name!r}")
    if not report.submitted:
        return report
    if confirm is not None and not confirm(report.submitted):
        report.submitted, report.declined = [], True
        return report
    for run in report.submitted:
        prepare_run_dir(run, runs_root)
    if cluster.executor != "debug":  # debug runs in this process, on the live code
        report.code_dir = snapshot_code(runs_root)
    for world_size in sorted({tasks_per_job(r.config) for r in report.submitted}):
        group = [r for r in report.submitted if tasks_per_job(r.config) == world_size]
        folder = runs_root / ".submitit" / "%j"
        executor = make_executor(cluster, folder, world_size, code_dir=report.code_dir,
                                 job_name=f"{runs[0].table}-{profile}")
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
                "code_dir": str(report.code_dir) if report.code_dir else None,
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


# --------------------------------------------------------------------------- SLURM states

# May still run. PREEMPTED too: where preemption requeues, the job comes back (submitit agrees).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
# Ended without the run's final.json: the job is over and the run did not finish.
SLURM_ENDED_BADLY = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                     "COMPLETED", "REVOKED", "SPECIAL_EXIT"}


def _expand_job_ids(field_: str) -> list[str]:
    """``123_[0-2,5%2]`` (a pending array, as sacct/squeue print it) -> 123_0, 123_1, 123_2, 123_5."""
    if "_[" not in field_:
        return [field_]
    base, _, spec = field_.partition("_[")
    spec = spec.rstrip("]").split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines -> {job id: first word of the state} ("CANCELLED by 0" -> CANCELLED)."""
    states = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if sep and state.split():
            for jid in _expand_job_ids(job):
                states[jid] = state.split()[0].rstrip("+")
    return states


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state of each job, in one sacct call (squeue for jobs sacct does not know yet).

    UNKNOWN where SLURM cannot say (no SLURM here, accounting down, job purged).
    """
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    states: dict[str, str] = {}
    for cmd in (["sacct", "-j", ",".join(ids), "-n", "-X", "-P", "-o", "JobID,State"],
                ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T"]):
        missing = [i for i in ids if i not in states]
        if not missing:
            break
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        states.update({k: v for k, v in _parse_states(out).items() if k not in states})
    return {i: states.get(i, "UNKNOWN") for i in ids}


def slurm_state(job_id: str) -> str:
    """The job's SLURM state from sacct (UNKNOWN when SLURM cannot say)."""
    return slurm_states([job_id])[str(job_id)]


def merged_status(dir_status: str, scheduler_state: str | None) -> str:
    """The run's status: the run directory's, corrected by what the scheduler says.

    A directory that says pending/running only means that the job has not written its
    end: the job may have been cancelled (-> ``cancelled``), or have died without a word,
    killed for time or memory, its node lost (-> ``failed``).
    """
    if dir_status not in ("pending", "running") or scheduler_state in (None, "UNKNOWN"):
        return dir_status
    if scheduler_state == "CANCELLED":
        return "cancelled"
    if scheduler_state in SLURM_ENDED_BADLY:
        return "failed"
    if scheduler_state == "RUNNING":
        return "running"
    return dir_status


@dataclass(frozen=True)
class RunState:
    """What is known about one run: from its directory and, for SLURM jobs, from sacct."""

    status: str  # done / failed / cancelled / running / pending / new
    job_id: str | None = None
    scheduler_state: str | None = None  # SLURM's word (None: not a SLURM job)
    error: str | None = None  # first line of error.txt, or what the scheduler said


def run_states(run_dirs: list[Path], *, ask_scheduler: bool = True) -> list[RunState]:
    """The state of each run directory; one sacct call for all its SLURM jobs."""
    dir_status = [run_status(d) for d in run_dirs]
    jobs = [read_json(d / "job.json") or {} for d in run_dirs]
    slurm_ids = [str(j["job_id"]) for j in jobs if j.get("executor") == "slurm" and "job_id" in j]
    scheduler = slurm_states(slurm_ids) if ask_scheduler else {}
    out = []
    for d, s, job in zip(run_dirs, dir_status, jobs):
        job_id = str(job["job_id"]) if "job_id" in job else None
        sched = scheduler.get(job_id) if job.get("executor") == "slurm" else None
        status = merged_status(s, sched)
        error = None
        if s == "failed":
            lines = (d / "error.txt").read_text().splitlines()
            error = lines[0] if lines else "error.txt is empty"
        elif status == "failed":
            error = (f"SLURM {sched}: the job ended without final.json "
                     f"(log: {job.get('submitit_folder', '.submitit')}/{job_id}/)")
        elif status == "cancelled":
            error = "SLURM CANCELLED (scancel): relaunch to resume from the last checkpoint"
        out.append(RunState(status, job_id, sched if job.get("executor") == "slurm" else None, error))
    return out


# --------------------------------------------------------------------------- waiting


def wait(report: LaunchReport, runs_root: Path, log=print) -> list[tuple[Run, str]]:
    """Block until the submitted jobs end; return the failures (run, first error line).

    Cancelled SLURM jobs end the wait too (submitit learns it from sacct) and count as
    failures, with that reason.
    """
    failures = []
    pending = list(report.jobs)
    done = 0
    while pending:
        # submitit asks sacct less and less often as a job ages; ask once for all our SLURM
        # jobs and make it look again at those that SLURM says have ended.
        ended = {j for j, s in slurm_states(job.job_id for _, job in pending
                                            if type(job).__name__ == "SlurmJob").items()
                 if s not in SLURM_ACTIVE and s != "UNKNOWN"}
        for run, job in list(pending):
            if job.done(force_check=job.job_id in ended):
                pending.remove((run, job))
                done += 1
                try:
                    if job.job_id in ended and not job.paths.result_pickle.exists():
                        # Killed without a result (scancel, time, memory): say so now rather
                        # than after submitit's 15 s wait for a slow file system.
                        raise RuntimeError(f"SLURM job {job.job_id} ended without a result")
                    job.results()  # one result per task
                    log(f"  [{done}/{len(report.jobs)}] {run.run_id}: done")
                except Exception as e:  # noqa: BLE001 - reported, not swallowed
                    state = run_states([run.run_dir(runs_root)])[0]
                    first = state.error or str(e).strip().splitlines()[-1]
                    failures.append((run, first))
                    log(f"  [{done}/{len(report.jobs)}] {run.run_id}: {state.status.upper()}: {first}")
        if pending:
            time.sleep(1.0)
    _settle([job.job_id for _, job in report.jobs if type(job).__name__ == "SlurmJob"])
    return failures


def _settle(slurm_job_ids: list[str], timeout_s: float = 30.0) -> None:
    """Wait (briefly) for SLURM to close jobs whose results are already written.

    The result file appears before the processes have exited; until then sacct says
    RUNNING, and a status right after ``run --wait`` would show it.
    """
    deadline = time.monotonic() + timeout_s
    while slurm_job_ids and time.monotonic() < deadline:
        if not SLURM_ACTIVE & set(slurm_states(slurm_job_ids).values()):
            return
        time.sleep(0.5)
