"""The job callable that submitit runs (:class:`RunJob`), the local run slots, and the
distributed environment a job exports for its ranks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
import traceback
import zlib
from pathlib import Path

from ..grid import Run
from ..paths import PACKAGE
from ..rundir import RunDir, git_state
from .tasks import TASKS

_STARTED = time.time()  # this process's start: an error.txt older than it is a previous attempt's


# The rendezvous port of a multi-process job: from its job id, the same on every task, below
# Linux's default ephemeral range (32768-60999), where the kernel picks the local ports of
# outgoing connections and of gloo's own listening sockets (submitit's default, 20000-60000,
# overlaps it). A MASTER_PORT inherited from the submitting shell is not used: jobs that share
# a node would all rendezvous on it.
RENDEZVOUS_PORTS = (20000, 32768)


def rendezvous_port(job_id: str) -> int:
    """The job's rendezvous port in ``RENDEZVOUS_PORTS``, a pure function of its job id (array
    tasks included: ``1234_5``), so that every task of the job computes the same one."""
    low, high = RENDEZVOUS_PORTS
    return low + zlib.crc32(str(job_id).encode()) % (high - low)


def _job_rank() -> int:
    """This task's global rank from submitit's job environment (0 outside submitit)."""
    import submitit

    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # called outside submitit (tests, a plain python call)
        return 0


def _first_error_of_attempt(run_dir: RunDir, started: float) -> bool:
    """Whether no rank of this attempt (begun at ``started``) has written ``error.txt`` yet.

    The first rank that fails writes it, whichever rank and node it is: a rank on another node
    that raises is the cause, and the ranks that then lose their peers (or are killed by srun)
    must not hide it. An ``error.txt`` older than the attempt is a previous attempt's.
    """
    try:
        return run_dir.error.stat().st_mtime < started
    except FileNotFoundError:
        return True


def _remove_stale_error(run_dir: RunDir, started: float) -> None:
    """Remove a previous attempt's ``error.txt``, not one that a rank of this attempt wrote."""
    if _first_error_of_attempt(run_dir, started):
        run_dir.error.unlink(missing_ok=True)


def _remove_stale_result() -> None:
    """Remove this task's result file left by a previous attempt of the same job (a requeue).

    submitit takes a task whose result file exists for ended; the file a killed first attempt
    wrote (its rank raised when a peer vanished) would make a waiter read that attempt's error
    while this one runs. This attempt writes its own when it ends.
    """
    import submitit

    try:
        stale = submitit.JobEnvironment().paths.result_pickle
    except (RuntimeError, KeyError):  # called outside submitit (tests, a plain python call)
        return
    if stale.exists():
        print(f"removing {stale.name}, a previous attempt's result", flush=True)
        stale.unlink(missing_ok=True)


def _distributed_env(world_size: int) -> tuple[int, str]:
    """Export env:// variables from submitit's job environment; return (rank, job id)."""
    import submitit

    # A process group made by the caller (tests) exists only where torch is loaded already: a
    # queued run must not load torch (half a GB) just to wait for its slot.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), f"pid{os.getppid()}"
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # called outside submitit (tests, a plain python call)
        return 0, f"pid{os.getpid()}"
    if env.num_tasks != world_size:
        raise RuntimeError(f"job has {env.num_tasks} tasks but the run needs {world_size}")
    if world_size > 1:
        os.environ["MASTER_PORT"] = str(rendezvous_port(env.job_id))  # TorchDistributedEnvironment reads it
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.global_rank, str(env.job_id)


@contextlib.contextmanager
def local_slot(slots_dir: Path, slots: int, job_key: str, rank: int, run_dir: RunDir, ticket: str = ""):
    """At most ``slots`` runs at once on this machine (LocalExecutor starts a whole array).

    Rank 0 takes a slot (a file lock, released by the OS if the process dies) and announces
    it; the other ranks of the same job wait for the announcement before joining the group.
    Waiting jobs take the slots in ``ticket`` order (the submission order: seed by seed, so
    an interrupted campaign leaves whole paired seeds): each holds a lock on its ticket file
    while it waits, and a job goes only when no live waiter holds a smaller ticket.
    """
    slots_dir.mkdir(parents=True, exist_ok=True)
    granted = slots_dir / f"granted-{job_key}"
    if rank != 0:
        while not granted.exists():
            if run_dir.error.exists() and run_dir.error.stat().st_mtime > _STARTED:
                raise RuntimeError("rank 0 of this job failed before starting; see error.txt")
            time.sleep(0.2)
        yield
        return
    queue = slots_dir / "queue"
    queue.mkdir(exist_ok=True)
    mine = queue / f"{ticket}-{job_key}"
    waiting = open(mine, "w")
    fcntl.flock(waiting, fcntl.LOCK_EX)
    handle = None
    try:
        while handle is None:
            if not _waiter_ahead(queue, mine.name):
                handle = _free_slot(slots_dir, slots)
            if handle is None:
                time.sleep(0.5)
    finally:
        mine.unlink(missing_ok=True)
        waiting.close()
    try:
        granted.touch()
        yield
    finally:
        granted.unlink(missing_ok=True)
        handle.close()


def _waiter_ahead(queue: Path, mine: str) -> bool:
    """Whether a live job waits in ``queue`` with a smaller ticket (dead ones' files are removed)."""
    for path in sorted(queue.iterdir()):
        if path.name >= mine:
            return False
        try:
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True  # its owner is alive and waiting
                path.unlink(missing_ok=True)  # unlocked: its owner died while waiting
        except FileNotFoundError:
            continue  # it took its slot meanwhile
    return False


def _free_slot(slots_dir: Path, slots: int):
    """The locked handle of a free slot, or None."""
    for i in range(slots):
        f = open(slots_dir / f"slot{i}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            f.close()
    return None


# What a run reports at its end, as TensorBoard scalars beside the training curves.
RESULT_SCALARS = ("top1", "top5", "best_top1", "knn_top1", "sec_per_iter", "final_loss",
                  "box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75")


def _board_results(run_dir: RunDir, final: dict) -> None:
    """The probe (or transfer) results as ``result/<key>`` at the run's last step."""
    from ..train.loop import add_scalars, tensorboard_writer

    writer = tensorboard_writer(run_dir.path)
    try:
        add_scalars(writer, "result", {k: final[k] for k in RESULT_SCALARS if k in final}, int(final.get("steps") or 0))
    finally:
        writer.close()


class RunJob:
    """The submitit callable: run the task (``repro.tasks``: pre-train and probe, fine-tune,
    or detection), write ``final.json``.

    ``checkpoint`` makes timeouts and preemptions requeue the same job; the run then
    resumes from the last good checkpoint, which is looked up when the job STARTS (never
    baked into the submission), so a requeued job cannot restart from a stale one.
    """

    def __init__(self, runs_root: str, slots: int | None = None, order: tuple[str, ...] = (), submitted: int = 0):
        self.runs_root = runs_root
        self.slots = slots
        self.order = order  # run ids in submission order: the local slots' queue order
        self.submitted = submitted  # time.time_ns() of the submission: later submissions queue behind

    def ticket(self, run: Run) -> str:
        position = self.order.index(run.run_id) if run.run_id in self.order else len(self.order)
        return f"{self.submitted:020d}-{position:06d}"

    def __call__(self, run: Run) -> dict:
        run_dir = RunDir.of(run, self.runs_root)
        rank = _job_rank()
        started = time.time()
        _remove_stale_result()
        try:
            rank, job_key = _distributed_env(run.config.processes)
            slot = (local_slot(Path(self.runs_root) / ".slots", self.slots, job_key, rank, run_dir, self.ticket(run))
                    if self.slots else contextlib.nullcontext())
            with slot:
                return self._run(run, run_dir, rank, started)
        except BaseException as e:
            if not isinstance(e, (KeyboardInterrupt, SystemExit)) and _first_error_of_attempt(run_dir, started):
                where = f"rank {rank} of {run.config.processes}, on host {socket.gethostname()}"
                run_dir.write_error(f"{type(e).__name__}: {e}\n\n({where})\n\n{traceback.format_exc()}")
            raise

    def _run(self, run: Run, run_dir: RunDir, rank: int, started: float) -> dict:
        finished = run_dir.read_final()
        if finished is not None:  # requeued after the end (a kill that lost the race with the last step)
            print(f"[{run.run_id}] rank {rank}: already finished, nothing to do", flush=True)
            return finished
        if rank == 0:
            _remove_stale_error(run_dir, started)  # a rerun of a failed run
        print(f"[{run.run_id}] rank {rank}: {run.config.task} in {run_dir} (code: {PACKAGE})", flush=True)
        result = TASKS[run.config.task](run, run_dir.path, Path(self.runs_root), rank)
        if rank != 0:
            return result
        import torch

        final = {"table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed, "run_id": run.run_id,
                 "task": run.config.task, **result, "git": git_state(), "torch": torch.__version__,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        run_dir.write_final(final)
        _board_results(run_dir, final)
        print(f"[{run.run_id}] done", flush=True)
        return final

    def checkpoint(self, run: Run):
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.runs_root, self.slots, self.order, self.submitted), run)
