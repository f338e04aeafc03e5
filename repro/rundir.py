"""A run directory's state and files, read by both the launcher and the results.

Each run directory holds ``config.yaml`` (the resolved config, git commit, dirty flag),
``job.json`` (who runs it), ``metrics.jsonl``, ``checkpoints/``, and at the end
``final.json`` (or ``error.txt``). What the directory alone says is here; what the
scheduler adds (a cancelled SLURM job leaves no trace in the directory) is the launcher's
(``repro.launch.slurm.run_states``), which takes the same arguments as :func:`run_states`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .atomic import atomic_write
from .config import ConfigError, RunConfig, from_dict, run_semantics, to_dict
from .grid import Run
from .paths import REPO  # a checkout, or a code snapshot (runs/.code/<hash>/)

CODE_RECORD = "code.json"  # in a code snapshot: its hash and the git state it was taken from


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


RERUN_FIX = "rerun with --rerun-failed, which keeps the checkpoints"
# Moved aside (``<name>.corrupt``) by a rerun: kept to look at, never read as a result.
RECORDS = ("final.json", "job.json", "config.yaml")


# Records are written once each, atomically (a rename), so one that read well reads well until
# its file changes; the launcher's live view asks for every run's status every second, and
# parsing each config.yaml again was most of its CPU (0.15 s a poll for 21 runs).
_READ_WELL: dict[Path, tuple[int, int, int]] = {}


def unreadable_record(run_dir: Path) -> tuple[str, str] | None:
    """The first of ``final.json``, ``job.json``, ``config.yaml`` that exists but cannot be read
    (cut by a crash, a full disk, an edit), with why; None when every one present reads."""
    for name in RECORDS:
        path = run_dir / name
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
        if not isinstance(doc, dict) or (name == "config.yaml" and not isinstance(doc.get("config"), dict)):
            return name, "not a mapping" if not isinstance(doc, dict) else "no config: mapping"
        _READ_WELL[path] = signature  # the signature read before the text: a change since reads again
    return None


def corrupt_error(run_dir: Path) -> str | None:
    """``final.json is unreadable (...): rerun with --rerun-failed, ...``, or None."""
    bad = unreadable_record(run_dir)
    return None if bad is None else f"{run_dir / bad[0]} is unreadable ({bad[1]}): {RERUN_FIX}"


def set_corrupt_aside(run_dir: Path) -> list[Path]:
    """Rename each unreadable record to ``<name>.corrupt`` (a rerun rewrites it); return them."""
    moved = []
    while (bad := unreadable_record(run_dir)) is not None:
        path = run_dir / bad[0]
        path.replace(path.with_name(path.name + ".corrupt"))
        moved.append(path.with_name(path.name + ".corrupt"))
    return moved


def run_status(run_dir: Path) -> str:
    """corrupt / done / failed / running / pending / new, from the run directory alone.

    ``corrupt``: a record (``final.json``, ``job.json``, ``config.yaml``) is there but does not
    read: an error, never a result."""
    if unreadable_record(run_dir) is not None:
        return "corrupt"
    if (run_dir / "final.json").is_file():
        return "done"
    if (run_dir / "error.txt").is_file():
        return "failed"
    if (run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoints").is_dir():
        return "running"
    if (run_dir / "job.json").is_file():
        return "pending"
    return "new"


@dataclass(frozen=True)
class RunState:
    """What is known about one run: from its directory and, for SLURM jobs, from sacct."""

    status: str  # done / failed / cancelled / corrupt / running / pending / new
    job_id: str | None = None
    scheduler_state: str | None = None  # SLURM's word (None: not a SLURM job, or not asked)
    error: str | None = None  # first line of error.txt, the unreadable record, or what the scheduler said


def first_error_line(run_dir: Path) -> str:
    lines = (run_dir / "error.txt").read_text().splitlines()
    return lines[0] if lines else "error.txt is empty"


def run_states(run_dirs: list[Path]) -> list[RunState]:
    """The state of each run directory, from the directory alone (no scheduler asked)."""
    out = []
    for d in run_dirs:
        status = run_status(d)
        job = read_json(d / "job.json") or {}
        error = first_error_line(d) if status == "failed" else corrupt_error(d) if status == "corrupt" else None
        out.append(RunState(status, str(job["job_id"]) if "job_id" in job else None, None, error))
    return out


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


