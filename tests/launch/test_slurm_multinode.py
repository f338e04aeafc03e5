"""Jobs that span nodes, on the namespaced nodes of .ci/slurm (``make slurm-up NODES=3``:
partition ``multi``, nodes rnode1-3, each slurmd in its own network and UTS namespace, joined
by a bridge; cluster profile slurm/ci-multi.yaml, 2 tasks per node).

What only matters across machines: the rendezvous address taken from the job's node list,
the job's port, the ranks and local ranks SLURM assigns, a requeue that lands on other nodes,
and a rank on the second node that fails. Skipped without the multi-node partition, failing
under CI=true (tests/needs.py).

Durations measured on the 2-core machine while other work ran on it (2026-12-07): the
rendezvous probe 25-80 s; Table 1's six smoke rows at 2 x 2 then 1 x 4, 4 processes each,
about 9 min; the second-node failure 1.5-2.5 min; the requeue 5-7.5 min; the float64 devices
runs (2 x 1 x 2 and 2 x 2, two rows each) 1.5 min.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch
from torch.testing import assert_close

from needs import unmet
from repro.launch import slurm
from repro.launch.cluster import load_cluster, make_executor
from repro.launch.job import rendezvous_port
from repro.grid import load_table
from repro.launch.submit import launch, wait
from repro.train import checkpoint as ckpt
from slurm_helpers import cluster_problem, last_step, wait_until, write_cluster, write_table

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("multinode_cluster")]
QUIET = {"log": lambda *a: None}
PARTITION = "multi"
START = "make slurm-up NODES=3"
# Table 1's rows in its smoke profile; Synced BN and Momentum BN among them.
ROWS = ["syncbn-syncbn", "bn-syncbn", "syncbn-bn", "bn-bn", "bn-mbn", "syncbn-mbn"]

# The rendezvous probe below runs in the job: pickled by value, so the job need not import
# this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def multinode_nodes() -> list[str]:
    """The nodes of the multi partition that can take jobs."""
    r = subprocess.run(["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %t"], capture_output=True, text=True,
                       timeout=20)
    return sorted(n for n, state in (line.split() for line in r.stdout.splitlines())
                  if state in ("idle", "mix", "alloc", "comp"))


@pytest.fixture(scope="session")
def multinode_cluster() -> list[str]:
    problem = cluster_problem()
    if problem is None:
        nodes = multinode_nodes()
        if len(nodes) >= 2:
            return nodes
        problem = f"partition {PARTITION!r} has {len(nodes)} usable nodes, not 2 or more"
    unmet(f"needs the multi-node SLURM cluster: {problem}; start it with `{START}`")


def write_multi_cluster(folder: Path, name: str, **changes) -> Path:
    """slurm/ci-multi.yaml with ``changes`` (e.g. tasks_per_node=4), as a profile file."""
    return write_cluster(folder, name, base="ci-multi", **changes)


def write_smoke_table(folder: Path, name: str, rows: list[str], *, copies: list[str] | None = None, **train) -> Path:
    """Table 1 with only its smoke profile, ``train`` overrides and the given rows (or, with
    ``copies``, copies of the one row under those ids)."""
    return write_table(folder, name, rows=rows, copies=copies, **train)


STARTED = re.compile(r"submitit INFO \((.+?)\) - Starting with JobEnvironment\(job_id=(\S+), hostname=(\S+), "
                     r"local_rank=(\d+)\(\d+\), node=(\d+)\(\d+\), global_rank=(\d+)\(\d+\)\)")


def task_starts(runs: Path, job_id: str) -> list[list[dict]]:
    """Per start of the job (a requeue starts it again): each task's host, node, local and
    global rank, as submitit logged them inside the task."""
    starts: dict[int, list[dict]] = {}
    for log in sorted((runs / ".submitit" / job_id).glob(f"{job_id}_*_log.out")):
        for n, m in enumerate(STARTED.finditer(log.read_text())):
            starts.setdefault(n, []).append(dict(host=m[3], local_rank=int(m[4]), node=int(m[5]), rank=int(m[6])))
    return [sorted(tasks, key=lambda t: t["rank"]) for _, tasks in sorted(starts.items())]


def final_state(run_dir: Path) -> dict:
    return ckpt.load(ckpt.checkpoints(run_dir)[-1])


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_states_close(a: dict, b: dict, *, rtol: float, atol: float, what: str) -> bool:
    """The checkpoints' weights and every device's buffers agree; returns whether bitwise."""
    bitwise = True
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert_close(a["model"][name], b["model"][name], rtol=rtol, atol=atol, msg=f"{what}: {name}")
        bitwise &= torch.equal(a["model"][name], b["model"][name])
    assert len(a["rank_buffers"]) == len(b["rank_buffers"])
    for d, (x, y) in enumerate(zip(a["rank_buffers"], b["rank_buffers"])):
        for name in x:
            assert_close(x[name], y[name], rtol=rtol, atol=atol, msg=f"{what}: device {d} {name}")
            bitwise &= torch.equal(x[name], y[name])
    return bitwise


def run_layout(tmp: Path, name: str, rows: list[str], cluster: Path, **train) -> tuple[Path, dict, float]:
    """Launch ``rows`` of the smoke table as one job array on ``cluster``; wait; return the
    runs folder, {row: (run, job)} and the wall time."""
    runs = tmp / f"runs-{name}"
    table = write_smoke_table(tmp, f"t{name}", rows, **train)
    t0 = time.monotonic()
    report = launch(load_table(table), "smoke", str(cluster), runs, **QUIET)
    failures = wait(report, runs, **QUIET)
    took = time.monotonic() - t0
    assert failures == [], failures
    return runs, {run.row: (run, job) for run, job in report.jobs}, took


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """Table 1's smoke rows at 4 processes, each run one job of 2 nodes x 2 tasks."""
    tmp = tmp_path_factory.mktemp("2x2")
    runs, jobs, took = run_layout(tmp, "2x2", ROWS, write_multi_cluster(tmp, "multi-2x2"), world_size=4)
    print(f"\nTable 1 smoke, 6 runs of 2 nodes x 2 tasks: {took:.0f} s", file=sys.stderr)
    return runs, jobs


@pytest.mark.timeout(900)
def test_table1_smoke_on_two_nodes_of_two_tasks_equals_one_node_of_four(two_by_two, tmp_path):
    runs2, jobs2 = two_by_two
    runs1, jobs1, took = run_layout(tmp_path, "1x4", ROWS, write_multi_cluster(tmp_path, "multi-1x4", tasks_per_node=4),
                                    world_size=4)
    print(f"Table 1 smoke, 6 runs of 1 node x 4 tasks: {took:.0f} s", file=sys.stderr)
    bitwise = {}
    for row in ROWS:
        (run2, job2), (run1, job1) = jobs2[row], jobs1[row]
        # where the tasks ran, as each task saw it: ranks 0-1 on the job's first node, 2-3 on
        # its second; the other layout all on one node
        (spread,) = task_starts(runs2, job2.job_id)
        assert [t["rank"] for t in spread] == [0, 1, 2, 3]
        assert [t["node"] for t in spread] == [0, 0, 1, 1] and [t["local_rank"] for t in spread] == [0, 1, 0, 1]
        assert spread[0]["host"] == spread[1]["host"] != spread[2]["host"] == spread[3]["host"], spread
        (packed,) = task_starts(runs1, job1.job_id)
        assert len({t["host"] for t in packed}) == 1 and [t["local_rank"] for t in packed] == [0, 1, 2, 3]

        d2, d1 = run2.run_dir(runs2), run1.run_dir(runs1)
        f2, f1 = (json.loads((d / "final.json").read_text()) for d in (d2, d1))
        assert f2["world_size"] == f1["world_size"] == 4 and f2["steps"] == f1["steps"] == 6
        assert_close(torch.tensor(losses(d2)), torch.tensor(losses(d1)), rtol=1e-6, atol=0, msg=row)
        bitwise[row] = assert_states_close(final_state(d2), final_state(d1), rtol=1e-5, atol=1e-6, what=row)
        for key in ("top1", "knn_top1"):
            assert f2[key] == pytest.approx(f1[key], abs=0.5), (row, key)  # probes: a 2-epoch fit on these weights
    print(f"2x2 == 1x4 bitwise: {bitwise}", file=sys.stderr)


def _rendezvous_probe(out: str, world: int) -> dict:
    """Runs in each task: the launcher's own environment export and process-group setup
    (repro.launch.job, repro.train.pretrain), then a gloo all-reduce and gather over the nodes.
    Writes what the task saw before joining, so a wrong address shows even if joining hangs."""
    import socket

    import torch
    import torch.distributed as dist

    from repro.launch.job import _distributed_env
    from repro.train.pretrain import setup_distributed

    rank, _ = _distributed_env(world)
    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_PROCID",
            "SLURM_LOCALID", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURMD_NODENAME",
            "GLOO_SOCKET_IFNAME")
    seen = {k: os.environ.get(k) for k in keys}
    seen.update(hostname=socket.gethostname(), rank=rank,
                master_ip=socket.gethostbyname(os.environ["MASTER_ADDR"]),
                own_ip=socket.gethostbyname(socket.gethostname()))
    Path(out, f"task{os.environ['SLURM_PROCID']}.json").write_text(json.dumps(seen))
    setup_distributed(world)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    hosts = [None] * world
    dist.all_gather_object(hosts, (dist.get_rank(), socket.gethostname()))
    dist.destroy_process_group()
    return {**seen, "sum": total.item(), "hosts": hosts}


@pytest.mark.timeout(300)
def test_rendezvous_on_the_first_node_at_the_jobs_port_with_slurms_ranks(tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    executor = make_executor(load_cluster(str(write_multi_cluster(tmp_path, "multi-2x2"))), tmp_path / "sub", 4,
                             job_name="rendezvous")
    job = executor.submit(_rendezvous_probe, str(out), 4)
    try:
        seen = wait_until(lambda: (sorted(out.glob("task*.json")) if len(list(out.glob("task*.json"))) == 4 else None),
                          180, "the 4 tasks to report what they saw")
        seen = [json.loads(p.read_text()) for p in seen]
        nodes = subprocess.run(["scontrol", "show", "hostnames", seen[0]["SLURM_JOB_NODELIST"]], capture_output=True,
                               text=True, check=True).stdout.split()
        assert len(nodes) == 2, nodes
        for task in seen:
            procid, localid = int(task["SLURM_PROCID"]), int(task["SLURM_LOCALID"])
            # SLURM's assignment (block: 2 tasks on each node, in node-list order) ...
            assert task["SLURMD_NODENAME"] == task["hostname"] == nodes[procid // 2], task
            assert localid == procid % 2 and int(task["SLURM_NODEID"]) == procid // 2, task
            # ... is what torch.distributed is told
            assert (int(task["RANK"]), int(task["LOCAL_RANK"]), task["rank"]) == (procid, localid, procid), task
            assert (task["WORLD_SIZE"], task["LOCAL_WORLD_SIZE"]) == ("4", "2"), task
            # the rendezvous: the job's first node, at the job's port, reached on its own address
            assert task["MASTER_ADDR"] == nodes[0], task
            assert task["MASTER_PORT"] == str(rendezvous_port(task["SLURM_JOB_ID"])), task
            assert task["master_ip"] == seen[0]["own_ip"] != seen[2]["own_ip"], task
            assert not task["master_ip"].startswith("127."), task
        results = job.results()
    finally:
        subprocess.run(["scancel", job.job_id], capture_output=True)
    assert [r["sum"] for r in results] == [10.0] * 4  # 1 + 2 + 3 + 4 over gloo across the nodes
    assert results[0]["hosts"] == [(r, nodes[r // 2]) for r in range(4)]


@pytest.mark.timeout(900)
def test_a_requeued_two_node_job_restarts_on_other_nodes_and_resumes_bitwise(tmp_path, multinode_cluster):
    """``scontrol requeue`` of a running 2-node job while its first node is drained: the job
    starts again on other nodes (the rendezvous moves with the node list), resumes from its
    last checkpoint, and ends bitwise equal to the same run uninterrupted."""
    if len(multinode_cluster) < 3:
        unmet(f"needs 3 nodes in partition {PARTITION!r} (a requeue onto other nodes), found "
              f"{multinode_cluster}; start them with `{START}`")
    runs = tmp_path / "runs"
    cluster = write_multi_cluster(tmp_path, "multi-2x2")
    launched, reports = {}, []
    for n, how in enumerate(("requeued", "whole")):
        table = write_smoke_table(tmp_path, f"t9{n}", ["syncbn-mbn"], copies=[how], world_size=4, max_steps=30,
                                  checkpoint_every=5)
        reports.append(launch(load_table(table), "smoke", str(cluster), runs, **QUIET))
        ((run, job),) = reports[-1].jobs
        launched[how] = (run.run_dir(runs), job)
    run_dir, job = launched["requeued"]
    drained = None
    try:
        wait_until(lambda: last_step(run_dir) >= 7, 300, "the 2-node run to reach step 7")
        assert last_step(run_dir) < 30
        (first,) = task_starts(runs, job.job_id)
        drained = first[0]["host"]  # the rendezvous node
        subprocess.run(["scontrol", "update", f"nodename={drained}", "state=drain", "reason=multinode test"],
                       check=True)
        t0 = time.monotonic()
        subprocess.run(["scontrol", "requeue", job.job_id], check=True)
        wait_until(lambda: len(task_starts(runs, job.job_id)) == 2 and len(task_starts(runs, job.job_id)[1]) == 4,
                   240, "the requeued job to start again")
        print(f"\nrequeue -> all 4 tasks started again in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    finally:
        if drained:
            subprocess.run(["scontrol", "update", f"nodename={drained}", "state=resume"], check=True)
    # The launcher's wait, not submitit's: the first attempt's ranks on the surviving node
    # wrote error results when their peers vanished, and neither those nor submitit's view of
    # the requeue's states may end the wait while the second attempt runs.
    for report in reports:
        assert wait(report, runs, **QUIET) == []
    for _, j in launched.values():
        j.results()  # every task's result is this attempt's: none raises
    first, second = task_starts(runs, job.job_id)
    hosts = lambda tasks: [t["host"] for t in tasks]  # noqa: E731
    print(f"first start on {hosts(first)}, second on {hosts(second)}", file=sys.stderr)
    assert drained not in hosts(second) and hosts(second)[0] != hosts(first)[0]
    assert [t["local_rank"] for t in second] == [0, 1, 0, 1]

    whole, _ = launched["whole"]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    replays = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert len(replays) <= 1 and sorted(set(steps)) == list(range(1, 31)), steps
    if replays:
        assert (steps[replays[0]] - 1) % 5 == 0 and steps[replays[0]] > 1, steps  # from a checkpoint, not step 0
    a, b = (json.loads((d / "final.json").read_text()) for d in (run_dir, whole))
    for key in ("steps", "final_loss", "top1", "top5", "best_top1", "knn_top1"):
        assert a[key] == b[key], key
    assert assert_states_close(final_state(run_dir), final_state(whole), rtol=0, atol=0, what="requeued")
    assert not (run_dir / "error.txt").exists()


@pytest.mark.timeout(300)
def test_a_task_on_the_second_node_that_fails_ends_the_job_with_its_error(tmp_path):
    """The job's second node has a broken copy of the training code (bound over the frozen
    code in that node's own mount namespace, as a node with a stale file system would): its
    two ranks raise on import while rank 0, on the first node, waits for them in the
    rendezvous. The job must end at once, FAILED, with the second node's error in error.txt."""
    runs = tmp_path / "runs"
    table = write_smoke_table(tmp_path, "t97", ["syncbn-mbn"], world_size=4)
    held = write_multi_cluster(tmp_path, "multi-held", sbatch={"hold": True})
    report = launch(load_table(table), "smoke", str(held), runs, **QUIET)
    ((run, job),) = report.jobs
    target = Path(json.loads((run.run_dir(runs) / "job.json").read_text())["code_dir"]) / "repro/train/pretrain.py"
    assert target.is_file()
    broken = tmp_path / "pretrain_broken.py"
    nodes = multinode_nodes()
    second = nodes[1]
    broken.write_text(f'raise RuntimeError("this copy of the code is broken on {second}")\n')
    # pin the job to the first two nodes, so the broken one is its second
    subprocess.run(["scontrol", "update", f"jobid={job.job_id}", f"nodelist={nodes[0]},{second}"], check=True)
    slurmd = Path(f"/run/slurm/slurmd-{second}.pid").read_text().strip()
    in_node = ["nsenter", "-t", slurmd, "-m"]
    subprocess.run([*in_node, "mount", "--bind", str(broken), str(target)], check=True)
    try:
        assert "broken" not in target.read_text()  # the other nodes (and this one) see the real code
        subprocess.run(["scontrol", "release", job.job_id], check=True)
        t0 = time.monotonic()
        ((_, reason),) = wait(report, runs, **QUIET)
        took = time.monotonic() - t0
    finally:
        subprocess.run([*in_node, "umount", str(target)], check=True)
    print(f"\nrank on {second} failed -> wait() returned in {took:.1f} s: {reason}", file=sys.stderr)
    error = (run.run_dir(runs) / "error.txt").read_text()
    assert f"RuntimeError: this copy of the code is broken on {second}" in reason
    assert re.search(rf"\(rank [23] of 4, on host {second}\)", error), error
    assert took < 120, f"the job outlived its failed ranks by {took:.0f} s"
    (state,) = slurm.slurm_states([job.job_id]).values()
    assert state == "FAILED", f"SLURM job {job.job_id} is {state}"
    (start,) = task_starts(runs, job.job_id)
    assert [t["host"] for t in start] == [nodes[0], nodes[0], second, second]


DEVICE_ROWS = ["bn-mbn", "syncbn-mbn"]


@pytest.fixture(scope="module")
def two_by_one_by_two(tmp_path_factory):
    """Two rows at 2 nodes x 1 task x 2 emulated devices (train.devices: 2), and the same rows
    at 2 nodes x 2 tasks of one device: 4 devices either way. In float64 (train.precision
    fp64): in float32 this smoke recipe amplifies round-off from step 3 on (1e-7 of the loss at
    steps 1-2, 1e-4 to 1e-3 at step 3, the same on one node: tests/train/test_devices_exact.py),
    so float32 could compare two steps only."""
    tmp = tmp_path_factory.mktemp("2x1x2")
    emulated, jobs, took = run_layout(tmp, "2x1x2", DEVICE_ROWS, write_multi_cluster(tmp, "multi-2x1", tasks_per_node=1),
                                      world_size=2, devices=2, precision="fp64")
    print(f"\n2 runs of 2 nodes x 1 task x 2 devices, float64: {took:.0f} s", file=sys.stderr)
    real, real_jobs, took = run_layout(tmp, "2x2-fp64", DEVICE_ROWS, write_multi_cluster(tmp, "multi-2x2"),
                                       world_size=4, precision="fp64")
    print(f"2 runs of 2 nodes x 2 tasks, float64: {took:.0f} s", file=sys.stderr)
    return (emulated, jobs), (real, real_jobs)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("row", DEVICE_ROWS)
def test_two_nodes_of_one_task_with_two_devices_equal_four_processes(two_by_one_by_two, row):
    """2 nodes x 1 task x 2 emulated devices against 2 nodes x 2 one-device tasks: the same
    global batch, BN statistics per (emulated) device, Synced BN over all four, in float64.
    Every step's loss, the final weights and each device's statistics agree to float64
    round-off over the whole run."""
    (runs, jobs), (runs2, jobs2) = two_by_one_by_two
    (start,) = task_starts(runs, jobs[row][1].job_id)
    assert len({t["host"] for t in start}) == 2 and [t["local_rank"] for t in start] == [0, 0]
    emulated, real = jobs[row][0].run_dir(runs), jobs2[row][0].run_dir(runs2)
    a, b = (json.loads((d / "final.json").read_text()) for d in (emulated, real))
    assert (a["world_size"], a["devices"], b["world_size"], b["devices"]) == (2, 2, 4, 1)
    assert a["steps"] == b["steps"] == 6
    assert_close(torch.tensor(losses(emulated)), torch.tensor(losses(real)), rtol=1e-10, atol=0, msg=row)
    first, second = (final_state(d) for d in (emulated, real))
    assert first["model"]["student.encoder.conv1.weight"].dtype == torch.float64
    assert len(first["rank_buffers"]) == len(second["rank_buffers"]) == 4
    assert_states_close(first, second, rtol=0, atol=1e-9, what=row)
