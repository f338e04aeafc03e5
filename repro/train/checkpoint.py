"""Checkpoints that resume exactly, written atomically and loaded safely.

A checkpoint holds only tensors, numbers, strings and plain containers, so it loads with
``torch.load(weights_only=True)``. Besides the model and optimizer it keeps every
device's buffers: Momentum BN histories (and BN statistics) differ per device. With emulated
devices (``train.devices``) a checkpoint has the form of a one-device run of as many processes
as devices in all: ``model`` is device 0's (what a transfer exports), ``rank_buffers[d]`` is
device ``d = process * devices + k``'s.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist

from ..atomic import atomic_write
from ..core.devices import device_buffers, device_state_dict, devices_of, load_devices_state
from ..rundir import RunDir

KEEP = 2  # checkpoints kept per run
_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says which file and what to do."""


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes (provenance: which weights a run wrote or loaded)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = RunDir(run_dir).checkpoints
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def final_record(run_dir: Path) -> dict:
    """What a finished pre-training records of its final (latest) checkpoint in final.json: the
    file, relative to the run directory, and its sha256 (checked before a transfer exports it)."""
    found = checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{RunDir(run_dir).checkpoints}: no checkpoint after training")
    return {"final_checkpoint": found[-1].relative_to(run_dir).as_posix(), "final_checkpoint_sha256": sha256(found[-1])}


def save(run_dir: Path, model, optimizer, step: int, *, rank: int, world_size: int) -> None:
    """Collective when distributed: every rank must call it at the same step."""
    devices = devices_of(model)
    buffers = [device_buffers(model, k) for k in range(devices)]
    if world_size > 1:
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, buffers)
    else:
        gathered = [buffers]
    if rank == 0:
        state = {
            "step": step,
            "world_size": world_size,
            "devices": devices,
            "model": {k: v.detach().cpu() for k, v in device_state_dict(model, 0).items()},
            "optimizer": optimizer.state_dict(),
            "rank_buffers": [own for process in gathered for own in process],
        }
        path = RunDir(run_dir).checkpoints / f"step_{step:08d}.pt"
        atomic_write(path, lambda f: torch.save(state, f))
        for old in checkpoints(run_dir)[:-KEEP]:
            old.unlink(missing_ok=True)
    if world_size > 1:
        dist.barrier()  # the file exists before any rank moves on (or is preempted)


def load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding pickled objects
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({reason[:160]}). Delete it to resume from the "
            f"previous checkpoint (or remove the run directory to start over)"
        ) from None
    missing = {"step", "world_size", "model", "optimizer", "rank_buffers"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this suite (missing {sorted(missing)})")
    return state


def resume(run_dir: Path, model, optimizer, *, rank: int, world_size: int) -> int:
    """Load the latest checkpoint of ``run_dir`` into model and optimizer; return its step.

    Returns 0 when the run has none. Never falls back silently: a corrupt latest
    checkpoint is an error that names the file.
    """
    found = checkpoints(run_dir)
    if not found:
        return 0
    state = load(found[-1])
    devices = devices_of(model)
    written = (state["world_size"], state.get("devices", 1))  # checkpoints before devices: 1
    if written != (world_size, devices):
        raise CheckpointError(
            f"{found[-1]}: written by {written[0]} processes x {written[1]} devices, resumed with "
            f"{world_size} x {devices}; resume with the same train.world_size and train.devices"
        )
    load_devices_state(model, state["model"], state["rank_buffers"][rank * devices:(rank + 1) * devices])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
