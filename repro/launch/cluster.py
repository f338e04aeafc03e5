"""Cluster profiles (``slurm/<name>.yaml``) and the submitit executor each one makes.

Cluster facts live only in ``slurm/<name>.yaml``: ``local`` (submitit's LocalExecutor,
real processes on this machine), ``debug`` (in-process, one process), ``slurm`` (any SLURM
cluster, partition from its default), ``ci`` (the single-node cluster of ``.ci/slurm``),
``ci-multi`` (its namespaced nodes, NODES=3: jobs that span nodes) and
``example-gpu`` (8 GPUs per node, to copy).
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, from_dict, load_yaml
from ..paths import data_dir
from .snapshot import frozen_python

CLUSTERS_DIR = data_dir("slurm")


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
        # A task that fails ends the job step: its other ranks would otherwise wait for it in
        # the rendezvous or a collective until the time limit, holding the node.
        srun_args=["--kill-on-bad-exit=1"],
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
