"""The sbatch files the SLURM path writes, read without submitting, and the distributed
environment a task of a multi-node job sees. No cluster is needed (``launch.sbatch_text``
builds the file with submitit's own writer), except for the one test that checks that text
against the executor's on the local SLURM cluster."""

from __future__ import annotations

import os
import re
import sys

import pytest

from repro.launch import cluster as L
from repro.launch.job import _distributed_env, rendezvous_port
from repro.config import ConfigError
from slurm_helpers import slurm_cluster  # noqa: F401 (fixture)


def sbatch_text(cluster: L.Cluster, world_size: int, tmp_path, array: int | None = None) -> str:
    code = tmp_path / "runs" / ".code" / "0123456789abcdef"
    return L.sbatch_text(cluster, tmp_path / "runs" / ".submitit" / "%j", world_size, code_dir=code,
                         job_name="t01-paper", array=array)


def flags(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, flags=re.M))


def test_every_cluster_profile_loads():
    names = sorted(p.stem for p in L.CLUSTERS_DIR.glob("*.yaml"))
    assert {"local", "debug", "slurm", "ci", "example-gpu"} <= set(names)
    for name in names:
        L.load_cluster(name)
    generic = L.load_cluster("slurm")  # usable on any cluster: nothing assumed
    assert (generic.partition, generic.account, generic.gpus_per_node, generic.mem_gb) == (None, None, 0, None)


def test_world_size_2_on_a_cpu_node_is_one_node_with_two_tasks(tmp_path):
    text = sbatch_text(L.load_cluster("ci"), 2, tmp_path, array=6)
    f = flags(text)
    assert f["nodes"] == "1" and f["ntasks-per-node"] == "2" and f["cpus-per-task"] == "1"
    assert f["partition"] == "ci" and f["array"] == "0-5%6" and f["mem"] == "4G"
    assert f["time"] == "30" and f["signal"] == "USR2@30" and f["job-name"] == "t01-paper"
    assert "gpus-per-node" not in f and "account" not in f and "qos" not in f
    # No partition at all on the generic profile: the cluster's default.
    assert "partition" not in flags(sbatch_text(L.load_cluster("slurm"), 2, tmp_path))


def test_world_size_64_with_8_gpus_per_node_is_8_nodes_of_8_tasks(tmp_path):
    gpu = L.load_cluster("example-gpu")
    text = sbatch_text(gpu, 64, tmp_path, array=6)
    f = flags(text)
    assert (f["nodes"], f["ntasks-per-node"], f["gpus-per-node"]) == ("8", "8", "8")  # one task per GPU
    assert f["cpus-per-task"] == "10" and f["mem"] == "480G" and f["partition"] == "gpu"
    assert f["time"] == "4320" and f["signal"] == "USR2@120" and f["array"] == "0-5%6"
    # One srun launches every task, from the code snapshot, with the job's own python.
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    code = tmp_path / "runs" / ".code" / "0123456789abcdef"
    assert "sh -c 'cd \"$0\" && export PYTHONPATH=" in srun
    assert " --kill-on-bad-exit=1 " in srun  # a failed task ends the job instead of leaving its peers waiting
    assert srun.endswith(f" {code} {sys.executable} -u -m submitit.core._submit {tmp_path}/runs/.submitit/%j")


def test_cluster_facts_and_extra_flags_reach_the_sbatch_file(tmp_path):
    cluster = L.Cluster(executor="slurm", partition="p", account="acc", qos="high", constraint="a100",
                        gpus_per_node=4, cpus_per_task=8, timeout_min=60, signal_delay_s=300, array_parallelism=2,
                        setup=["module load cuda/12.4"], sbatch={"exclusive": True, "mail-type": "END"})
    text = sbatch_text(cluster, 8, tmp_path, array=5)
    f = flags(text)
    assert (f["partition"], f["account"], f["qos"], f["constraint"]) == ("p", "acc", "high", "a100")
    assert (f["nodes"], f["ntasks-per-node"], f["gpus-per-node"]) == ("2", "4", "4")
    assert f["signal"] == "USR2@300" and f["array"] == "0-4%2" and f["mail-type"] == "END"
    assert "#SBATCH --exclusive\n" in text
    assert text.index("module load cuda/12.4") < text.index("\nsrun ")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize("profile", ["ci", "example-gpu"])
def test_the_text_is_what_the_executor_submits(profile, tmp_path):
    """``sbatch_text`` (no cluster needed) against submitit's SlurmExecutor (needs srun)."""
    cluster, code = L.load_cluster(profile), tmp_path / "runs" / ".code" / "0123456789abcdef"
    folder, world_size = tmp_path / "runs" / ".submitit" / "%j", 16 if profile == "example-gpu" else 2
    ex = L.make_executor(cluster, folder, world_size, code_dir=code, job_name="t01-paper")
    ex.parameters["map_count"] = 6  # what map_array sets for an array of 6
    assert ex._make_submission_file_text(ex._submitit_command_str, "uid") == L.sbatch_text(
        cluster, folder, world_size, code_dir=code, job_name="t01-paper", array=6)


def test_only_a_slurm_profile_has_an_sbatch_file(tmp_path):
    with pytest.raises(ConfigError, match="only SLURM clusters"):
        L.sbatch_text(L.load_cluster("local"), tmp_path, 2)


def test_a_world_size_that_does_not_fill_whole_nodes_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="12 processes do not fill whole nodes of 8"):
        L.make_executor(L.load_cluster("example-gpu"), tmp_path, 12)


def test_a_task_of_an_8x8_job_exports_its_rank_for_torch_distributed(monkeypatch):
    """What SLURM gives task 11 (node 1, local rank 3) of 8 nodes x 8 tasks, and what the job
    hands to torch.distributed (env://)."""
    slurm_env = {
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "64", "SLURM_PROCID": "11",
        "SLURM_LOCALID": "3", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "8", "SLURM_JOB_NODELIST": "gpu[01-08]",
    }
    for key, value in slurm_env.items():
        monkeypatch.setenv(key, value)
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    # What a login shell may have exported: the job's own values replace them.
    monkeypatch.setenv("MASTER_ADDR", "login01")
    monkeypatch.setenv("MASTER_PORT", "29500")
    rank, job = _distributed_env(64)
    assert (rank, job) == (11, "4242")
    assert os.environ["MASTER_ADDR"] == "gpu01" and os.environ["WORLD_SIZE"] == "64"
    assert os.environ["RANK"] == "11" and os.environ["LOCAL_RANK"] == "3" and os.environ["LOCAL_WORLD_SIZE"] == "8"
    # The same on every task (a function of the job id), below the kernel's ephemeral ports.
    assert int(os.environ["MASTER_PORT"]) == rendezvous_port("4242") and 20000 <= rendezvous_port("4242") < 32768
    with pytest.raises(RuntimeError, match="job has 64 tasks but the run needs 2"):
        _distributed_env(2)


def test_the_cli_prints_the_paper_arrays_sbatch_file_without_a_cluster(capsys):
    from repro.cli import main

    assert main(["sbatch", "t01", "--profile", "paper", "--cluster", "example-gpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 6 runs of 64 processes: ") and out.count("#!/bin/bash") == 1
    f = flags(out)
    assert (f["array"], f["nodes"], f["ntasks-per-node"], f["job-name"]) == ("0-5%6", "8", "8", "t01-paper")
    assert main(["sbatch", "t01", "--profile", "paper", "--cluster", "local"]) == 2
    assert "only SLURM clusters have an sbatch file" in capsys.readouterr().err


def test_rendezvous_ports_are_spread_below_the_ephemeral_range():
    """Jobs that share a node get different ports (array tasks included), never one the kernel
    hands out for outgoing connections (Linux's default ephemeral range starts at 32768)."""
    ports = [rendezvous_port(f"{job}_{task}") for job in range(1000, 1050) for task in range(20)]
    assert all(20000 <= p < 32768 for p in ports)
    assert len(set(ports)) > 0.95 * len(ports)
    assert rendezvous_port("1234_5") == rendezvous_port("1234_5") != rendezvous_port("1234_6")
