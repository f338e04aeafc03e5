"""A run directory: its files, its records and its status, asked by every layer.

Each run directory holds ``config.yaml`` (the resolved config, git commit, dirty flag),
``job.json`` (who runs it), ``metrics.jsonl``, ``checkpoints/``, ``tensorboard/``, and at
the end ``final.json`` (or ``error.txt``). :class:`RunDir` names them, reads and writes its
records (atomically), and says the run's :class:`Status`. What the scheduler adds (a
cancelled SLURM job leaves no trace in the directory) is passed in as its word on the job
(:meth:`RunDir.status`), or as a function that asks it (:func:`run_states`): the launcher's
``repro.launch.slurm.slurm_states``; this module never imports the launcher.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from .atomic import atomic_write, atomic_write_text
from .config import ConfigError, load_config, semantic_dict, task_view, to_dict
from .grid import Run
from .paths import REPO  # a checkout, or a code snapshot (runs/.code/<hash>/)

CODE_RECORD = "code.json"  # in a code snapshot: its hash and the git state it was taken from


class Status(str, Enum):
    """A run's status. The value is the word that ``status``, the rendered tables and their
    CSVs print, so a member compares (and hashes) equal to its word."""

    NEW = "new"  # no record yet
    PENDING = "pending"  # submitted (job.json), nothing logged yet
    RUNNING = "running"  # metrics or checkpoints written, no end recorded
    DONE = "done"  # final.json
    # final.json that records a divergence: the run's outcome at its config (the loss became
    # NaN or Inf), kept as its result at its seed; it has no accuracy (repro/launch/tasks.py)
    DIVERGED = "diverged"
    FAILED = "failed"  # error.txt, or the scheduler says the job ended without final.json
    CANCELLED = "cancelled"  # the scheduler says the job was cancelled (scancel)
    CORRUPT = "corrupt"  # a record is there but does not read: an error, never a result
    # A row of a rendered table (results.collect.summarise), never a run:
    PAPER_ONLY = "paper only"  # a literature row, shown with its paper values only
    NOT_IN_PROFILE = "not in profile"  # a row the profile does not run

    __str__ = str.__str__  # "done", not "Status.DONE", in f-strings and CSVs
    __format__ = str.__format__
    __hash__ = str.__hash__  # found in a dict or set keyed by its word

    @property
    def ended(self) -> bool:
        """Whether the run will not change without a relaunch (done, failed, cancelled, corrupt)."""
        return self in ENDED


ENDED = (Status.DONE, Status.DIVERGED, Status.FAILED, Status.CANCELLED, Status.CORRUPT)
# Finished: the run's end is recorded in final.json, and a relaunch leaves it alone.
FINISHED = (Status.DONE, Status.DIVERGED)
# Where a run may still go: the scheduler's word can turn these into cancelled or failed.
UNFINISHED = (Status.PENDING, Status.RUNNING)

# SLURM's states of a job that ended without the run's final.json: the job is over and the run
# did not finish (COMPLETED too: the job ended well, the run did not write its end).
SLURM_ENDED_BADLY = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                     "COMPLETED", "REVOKED", "SPECIAL_EXIT"}
# How a scheduler is asked: its job ids -> its word on each (``UNKNOWN`` where it cannot say).
Scheduler = Callable[[list[str]], dict[str, str]]

RERUN_FIX = "rerun with --rerun-failed, which keeps the checkpoints"

# Records are written once each, atomically (a rename), so one that read well reads well until
# its file changes; the launcher's live view asks for every run's status every second, and
# parsing each config.yaml again was most of its CPU (0.15 s a poll for 21 runs).
_READ_WELL: dict[Path, tuple[int, int, int]] = {}
# final.json's divergence, per its signature: asked at every poll of the live view as well.
_DIVERGED: dict[Path, tuple[tuple[int, int, int], str | None]] = {}


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def git_commit(repo: Path = REPO) -> dict:
    """Commit and dirty flag of the git checkout ``repo`` (None for each when git cannot say).

    Dirty means uncommitted changes to tracked files outside ``results/``: that tree holds run
    records and rendered reports, which a campaign changes as it goes (a re-rendered report, a
    finished run set aside to rerun) without changing the code a run executes."""

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results") if commit else None
    return {"commit": commit or None, "dirty": bool(status) if status is not None else None}


def git_state() -> dict:
    """Commit and dirty flag of the code that runs: a snapshot answers from its record."""
    record = read_json(REPO / CODE_RECORD)
    if record is not None:
        return {"commit": record.get("commit"), "dirty": record.get("dirty"), "code": record.get("code")}
    return git_commit(REPO)


@dataclass(frozen=True)
class RunState:
    """What is known about one run: from its directory and, for SLURM jobs, from the scheduler."""

    status: Status
    job_id: str | None = None
    scheduler_state: str | None = None  # SLURM's word (None: not a SLURM job, or not asked)
    error: str | None = None  # first line of error.txt, the unreadable record, or what the scheduler said


@dataclass(frozen=True)
class RunDir:
    """One run's directory (``<runs root>/<table>/<profile>/<run id>/``): its files as
    attributes, its records read and written (atomically), and its status."""

    path: Path

    CONFIG = "config.yaml"
    JOB = "job.json"
    METRICS = "metrics.jsonl"
    FINAL = "final.json"
    ERROR = "error.txt"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tensorboard"
    # The records a run writes once each; one that does not read makes the run corrupt, and a
    # rerun moves it aside (``<name>.corrupt``): kept to look at, never read as a result.
    RECORDS = (FINAL, JOB, CONFIG)

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, run: Run, runs_root: str | os.PathLike) -> RunDir:
        return cls(run.run_dir(runs_root))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # ----------------------------------------------------------------- files

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def job(self) -> Path:
        return self.path / self.JOB

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def final(self) -> Path:
        return self.path / self.FINAL

    @property
    def error(self) -> Path:
        return self.path / self.ERROR

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    # ----------------------------------------------------------------- records

    def prepare(self, run: Run) -> RunDir:
        """Create the directory with the run's resolved config, or check it matches the saved one."""
        if self.config.is_file():
            if semantic_dict(self.saved_config()) != semantic_dict(run.config):
                raise ConfigError(f"{self.config}: holds a different config than run {run.run_id}; remove the directory")
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        doc = {"table": run.table, "profile": run.profile, "row": run.row, "seed": run.seed, "run_id": run.run_id,
               "git": git_state(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "config": _yaml_ready(to_dict(run.config))}
        atomic_write(self.config, lambda f: f.write(yaml.safe_dump(doc, sort_keys=False).encode()))
        return self

    def saved_config(self):
        """The run's config as ``config.yaml`` saved it (a ``RunConfig``)."""
        saved = (yaml.safe_load(self.config.read_text()) or {}).get("config", {})
        # A config.yaml written before each task had its own config holds every task's sections.
        return load_config(task_view(saved, saved.get("task", "pretrain")))

    def read_job(self) -> dict | None:
        return read_json(self.job)

    def write_job(self, job: dict) -> None:
        write_json(self.job, job)

    def read_final(self) -> dict | None:
        """The run's results (None while it has none, or when the record does not read)."""
        return read_json(self.final)

    def write_final(self, final: dict) -> None:
        write_json(self.final, final)

    def diverged(self) -> str | None:
        """Why the run's training diverged (``loss is nan at step 1063 (lr 0.006144)``), read from
        ``final.json``; None when it did not, or has not finished."""
        path = self.final
        try:
            st = path.stat()
        except OSError:
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _DIVERGED.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        final = read_json(path) or {}
        why = final.get("diverged")
        why = str(why) if why else None
        _DIVERGED[path] = (signature, why)
        return why

    def write_error(self, text: str) -> None:
        atomic_write_text(self.error, text)

    def first_error_line(self) -> str:
        lines = self.error.read_text().splitlines()
        return lines[0] if lines else f"{self.ERROR} is empty"

    def last_metrics(self) -> dict | None:
        return last_metrics(self.metrics)

    def unreadable_record(self) -> tuple[str, str] | None:
        """The first of ``final.json``, ``job.json``, ``config.yaml`` that exists but cannot be read
        (cut by a crash, a full disk, an edit), with why; None when every one present reads."""
        for name in self.RECORDS:
            path = self.path / name
            try:
                st = path.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if _READ_WELL.get(path) == signature:
                continue
            try:
                text = path.read_text()
                doc = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
            except (OSError, ValueError, yaml.YAMLError) as e:
                return name, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            if not isinstance(doc, dict) or (name == self.CONFIG and not isinstance(doc.get("config"), dict)):
                return name, "not a mapping" if not isinstance(doc, dict) else "no config: mapping"
            _READ_WELL[path] = signature  # the signature read before the text: a change since reads again
        return None

    def corrupt_error(self) -> str | None:
        """``<dir>/final.json is unreadable (...): rerun with --rerun-failed, ...``, or None."""
        bad = self.unreadable_record()
        return None if bad is None else f"{self.path / bad[0]} is unreadable ({bad[1]}): {RERUN_FIX}"

    def set_corrupt_aside(self) -> list[Path]:
        """Rename each unreadable record to ``<name>.corrupt`` (a rerun rewrites it); return them."""
        moved = []
        while (bad := self.unreadable_record()) is not None:
            path = self.path / bad[0]
            path.replace(path.with_name(path.name + ".corrupt"))
            moved.append(path.with_name(path.name + ".corrupt"))
        return moved

    # ----------------------------------------------------------------- status

    def slurm_job_id(self) -> str | None:
        """The SLURM job that runs it (None: not submitted to SLURM)."""
        job = self.read_job() or {}
        return str(job["job_id"]) if job.get("executor") == "slurm" and "job_id" in job else None

    def status(self, scheduler_state: str | None = None) -> Status:
        """The run's status: from its directory, corrected by the scheduler's word on its job
        (``scheduler_state``: SLURM's state, e.g. ``CANCELLED``; None: not asked, or no SLURM job).

        A directory that says pending or running only means that the job has not written its
        end: the job may have been cancelled (-> cancelled), or have died without a word,
        killed for time or memory, its node lost (-> failed). ``UNKNOWN`` (SLURM cannot say)
        leaves the directory's word.
        """
        if self.unreadable_record() is not None:
            return Status.CORRUPT
        if self.final.is_file():
            return Status.DIVERGED if self.diverged() is not None else Status.DONE
        if self.error.is_file():
            return Status.FAILED
        if self.metrics.is_file() or self.checkpoints.is_dir():
            own = Status.RUNNING
        elif self.job.is_file():
            own = Status.PENDING
        else:
            return Status.NEW
        if scheduler_state == "CANCELLED":
            return Status.CANCELLED
        if scheduler_state in SLURM_ENDED_BADLY:
            return Status.FAILED
        if scheduler_state == "RUNNING":
            return Status.RUNNING
        return own

    def state(self, scheduler_state: str | None = None) -> RunState:
        """:meth:`status` with the job id, the scheduler's word and, for a run that did not
        finish, why (error.txt's first line, the unreadable record, or what the scheduler said)."""
        job = self.read_job() or {}
        job_id = str(job["job_id"]) if "job_id" in job else None
        on_slurm = job.get("executor") == "slurm"
        sched = scheduler_state if on_slurm else None
        status = self.status(sched)
        error = None
        if status is Status.CORRUPT:
            error = self.corrupt_error()
        elif status is Status.FAILED and self.error.is_file():
            error = self.first_error_line()
        elif status is Status.FAILED:
            error = (f"SLURM {sched}: the job ended without {self.FINAL} "
                     f"(log: {job.get('submitit_folder', '.submitit')}/{job_id}/)")
        elif status is Status.DIVERGED:
            error = f"training diverged: {self.diverged()}"
        elif status is Status.CANCELLED:
            error = "SLURM CANCELLED (scancel): relaunch to resume from the last checkpoint"
        return RunState(status, job_id, sched, error)


def run_states(run_dirs: Iterable[RunDir | Path], scheduler: Scheduler | None = None) -> list[RunState]:
    """The state of each run directory, with one question to ``scheduler`` (e.g. the launcher's
    ``slurm_states``) for all their SLURM jobs; without one, from the directories alone."""
    dirs = [d if isinstance(d, RunDir) else RunDir(d) for d in run_dirs]
    job_ids = [d.slurm_job_id() for d in dirs]
    asked = [j for j in job_ids if j is not None]
    answer = scheduler(asked) if scheduler is not None and asked else {}
    return [d.state(answer.get(j) if j is not None else None) for d, j in zip(dirs, job_ids)]


def _yaml_ready(d):
    if isinstance(d, dict):
        return {k: _yaml_ready(v) for k, v in d.items()}
    return list(d) if isinstance(d, tuple) else d


def last_metrics(path: Path, block: int = 1 << 16) -> dict | None:
    """The last complete line of a ``metrics.jsonl`` (None when there is none), read from the
    end of the file: the live view asks every second, and a long run's file is long."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        pos = f.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            lines = tail.split(b"\n")
            head, whole = (b"", lines) if pos == 0 else (lines[0], lines[1:])  # lines[0] may be cut here
            for line in reversed(whole):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash (the last one, torn while written), or blank
                if isinstance(record, dict):
                    return record
            tail = head
    return None


