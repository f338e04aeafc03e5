"""The frozen code: jobs run a copy of the ``repro`` package taken at submission.

The launcher copies the package and the table files (``tables/*.yaml``: a transfer job
expands its pre-training table when it starts) into ``<runs>/.code/<hash>/`` and the jobs
run from that copy, so editing the tree after submitting changes no queued, running or
requeued job.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from pathlib import Path

from ..atomic import atomic_write_dir
from ..paths import PACKAGE, REPO
from ..rundir import CODE_RECORD, git_state, write_json


def _snapshot_files() -> list[Path]:
    """What a job reads from the tree: the ``repro`` package, as ``git archive`` would ship
    it (no caches), and, in a checkout, the table files beside it (``tables/*.yaml``, not
    ``tables/out/``; an installed package carries its own copy inside, ``repro/_tables``)."""
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

    def write(tmp: Path) -> None:
        os.chmod(tmp, 0o755)
        for name, data in contents.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        write_json(tmp / CODE_RECORD, {"code": code, **git_state(), "source": str(PACKAGE),
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    try:
        atomic_write_dir(dest, write)
    except OSError:
        if not (dest / CODE_RECORD).is_file():  # not a concurrent launcher that won the rename
            raise
    return dest


def frozen_python(code_dir: Path) -> str:
    """The job's python command: started in the snapshot, with the snapshot first on the path.

    submitit runs ``<python> -u -m submitit.core._submit FOLDER`` and unpickles our callable
    by reference (``repro.launch.job.RunJob``), so ``import repro`` must find the snapshot:
    ``-m`` puts the working directory first on ``sys.path`` (hence the ``cd``, which also keeps
    the submitting directory's ``repro/`` out), and PYTHONPATH carries it to any subprocess.
    The editable install's finder comes after both. POSIX sh, as ``env -C`` is GNU only.
    """
    script = 'cd "$0" && export PYTHONPATH="$0${PYTHONPATH:+:$PYTHONPATH}" && exec "$@"'
    return " ".join(shlex.quote(a) for a in ("sh", "-c", script, str(code_dir), sys.executable))
