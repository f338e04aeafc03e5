"""Shared test helpers: real multi-process torch.distributed (gloo) on CPU."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def float64():
    """The test runs in float64 (``pytestmark = pytest.mark.usefixtures("float64")``); the default
    dtype is restored for other tests."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves os.environ as it found it. submitit's TorchDistributedEnvironment.export
    (tests/launch/test_slurm_sbatch.py) sets MASTER_ADDR & co. itself, which would otherwise
    reach the jobs that later tests launch ("MASTER_ADDR is already set")."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn, world_size: int, port: int, out_dir: str, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size: int, tmp_path: Path, *args) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; return results.

    ``fn`` must be a module-level function of an importable module (spawn pickles it).
    """
    mp.spawn(_worker, args=(fn, world_size, free_port(), str(tmp_path), args), nprocs=world_size)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


@pytest.fixture
def distributed(tmp_path):
    return lambda fn, world_size, *args: run_distributed(fn, world_size, tmp_path, *args)


sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def pretrained_runs_root(tmp_path_factory):
    """A runs root holding Table 8's smoke ``ours-300`` pre-trained in this process, finished
    with a final.json: what the transfer tables start from. One process instead of the
    table's two (the files are the same kind); shared by every transfer test module."""
    import dataclasses
    import json

    from repro.train import pretrain as train
    from repro.grid import expand, load_table

    root = tmp_path_factory.mktemp("pretrained_runs")
    run = next(r for r in expand(load_table("t08"), "smoke") if r.row == "ours-300")
    cfg = dataclasses.replace(run.config, train=dataclasses.replace(run.config.train, world_size=1))
    run_dir = run.run_dir(root)
    run_dir.mkdir(parents=True)
    train.pretrain(cfg, run_dir, progress=False)
    (run_dir / "final.json").write_text(json.dumps({"top1": 0.0}))
    return root
