"""Table 1's Sec/Iter column on CPU: seconds per step of each student/teacher norm pair.

Two processes (torch.multiprocessing.spawn, gloo, 1 thread each by default), the model
wrapped in DistributedDataParallel with broadcast_buffers=False as in repro/train/pretrain.py, each
rank its own batch. The six BYOL pairs and MoCo v2's two key encoders (Table 3: shuffling
BN, Momentum BN) run interleaved in one job; a barrier before and after each timed step
makes its time that of the slower rank. BYOL ratios to bn/bn are printed next to the
paper's (64 GPUs, 32 images each, ResNet-18 at 96 px; here 2 CPU processes talking through
shared memory, so synchronisation is far cheaper than across 8 machines). MoCo's step (one
student and one teacher forward) is compared with MoCo's shuffling BN only.

    python bench/bench_sec_per_iter.py [--arch resnet18] [--image-size 96] [--batch 8] [--repeats 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile

import _timing
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from repro.models.backbones import build_moco, build_student_teacher
from repro.train.step import train_step

# (student norm, teacher norm) -> the paper's Table 1 seconds per iteration
PAPER_SEC_PER_ITER = {
    ("bn", "bn"): 0.24,
    ("syncbn", "syncbn"): 1.1,
    ("bn", "syncbn"): 0.39,
    ("syncbn", "bn"): 0.49,
    ("bn", "mbn"): 0.25,
    ("syncbn", "mbn"): 0.50,
}
MOCO_TEACHER_NORMS = ("shuffle", "mbn")  # Table 3's key encoders


def make_ddp_step(model, args, rank: int, tau: float, alpha: float):
    """One training step of ``model`` under DDP, on this rank's own fixed batch."""
    model.train()
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(rank)
    v1, v2 = (torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g) for _ in range(2))

    def step() -> None:  # the training loop's own step (repro.train.step.train_step)
        train_step(model, optimizer, v1, v2, lr=0.05, tau=tau, alpha=alpha, forward=ddp)

    return step


def worker(rank: int, world_size: int, port: int, args, out_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        steps = {}
        for s, t in PAPER_SEC_PER_ITER:
            torch.manual_seed(0)  # same initial weights on every rank
            model = build_student_teacher(args.arch, student_norm=s, teacher_norm=t)
            steps[f"{s}/{t}"] = make_ddp_step(model, args, rank, tau=0.99, alpha=0.5)
        for t in MOCO_TEACHER_NORMS:
            torch.manual_seed(0)
            # A queue of 256 global batches; Table 3's fixed alpha 0.064, MoCo's tau 0.999.
            model = build_moco(args.arch, teacher_norm=t, queue_size=256 * world_size * args.batch)
            steps[f"MoCo v2, bn/{t}"] = make_ddp_step(model, args, rank, tau=0.999, alpha=0.064)
        times = _timing.interleaved(steps, args.repeats, sync=dist.barrier)
        if rank == 0:
            torch.save({"times": times, "machine": _timing.machine()}, out_file)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _timing.step_arguments(parser, batch_help="images per view per process", repeats=8, threads=1,
                           threads_help="torch threads per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "times.pt")
        mp.spawn(worker, args=(2, free_port(), args, out_file), nprocs=2)
        result = torch.load(out_file)
    times = result["times"]
    print(result["machine"] + " (threads per process; 2 processes)")
    print(f"\n{args.arch} {args.image_size} px, {args.batch} images x 2 views per process, 2 processes, "
          f"{args.repeats} steps each:")
    rows = []
    for (s, t), paper in PAPER_SEC_PER_ITER.items():
        ts = times[f"{s}/{t}"]
        rows.append([f"{s}/{t}", _timing.median(ts), f"{100 * _timing.spread(ts):.1f}%",
                     f"{_timing.paired_ratio(ts, times['bn/bn']):.2f}", paper,
                     f"{paper / PAPER_SEC_PER_ITER['bn', 'bn']:.2f}"])
    headers = ["student/teacher", "sec/iter", "+-", "ratio to bn/bn", "paper sec/iter", "paper ratio"]
    _timing.table(rows, headers)
    print("\nMoCo v2 (Table 3 has no Sec/Iter column): shuffling BN vs Momentum BN in the key encoder")
    rows = []
    for t in MOCO_TEACHER_NORMS:
        ts = times[f"MoCo v2, bn/{t}"]
        rows.append([f"bn/{t}", _timing.median(ts), f"{100 * _timing.spread(ts):.1f}%",
                     f"{_timing.paired_ratio(ts, times['MoCo v2, bn/shuffle']):.2f}"])
    _timing.table(rows, ["student/teacher", "sec/iter", "+-", "ratio to bn/shuffle"])


if __name__ == "__main__":
    main()
