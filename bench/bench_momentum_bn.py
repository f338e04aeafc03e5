"""Momentum BN overhead: a full training step with a plain-BN teacher vs a Momentum BN teacher.

One step is the training loop's own (repro.train.step.train_step): EMA update (model.update_teacher),
set alpha, student forward on both views, teacher forward on both views (inside the model; for
``mbn`` under the lazy two-view update), loss, the finite-loss check, backward, SGD step. Both models start from the same weights and
see the same batch. Goal (issue 8): ratio mbn / bn at most 1.02. Then the layer alone against
nn.BatchNorm2d in training mode (no grad, as in the teacher) on a 32x64x48x48 tensor, with
the ways to its batch statistics that the core chose between.

    python bench/bench_momentum_bn.py [--repeats 10] [--sizes resnet18:96:8,resnet50:224:4]
"""

from __future__ import annotations

import argparse

import _timing
import torch
import torch.nn.functional as F
from torch import nn

from repro.models.backbones import build_student_teacher
from repro.core.momentum_bn import MomentumBatchNorm2d, deferred_update, set_alpha
from repro.train.step import train_step

DEFAULT_SIZES = "resnet18:96:8,resnet50:224:4"  # arch:image px:images per view


def make_step(arch: str, image_size: int, batch: int, teacher_norm: str, *, device: str = "cpu",
              autocast: torch.dtype | None = None, channels_last: bool = False,
              compile: bool = False, width: int = 64, small_stem: bool = False, seed: int = 0):
    """A closure running one training step, on the given views or a fixed random batch.

    The same seed gives the same weights and batch for every norm.
    """
    torch.manual_seed(seed)
    model = build_student_teacher(arch, teacher_norm=teacher_norm, width=width, small_stem=small_stem)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    views = [torch.randn(batch, 3, image_size, image_size).to(device, memory_format=memory_format)
             for _ in range(2)]
    if compile:
        model.student.compile()  # as the loop does (train.compile)

    def step(*batch: torch.Tensor) -> None:
        # any alpha < 1 costs the same; 0.5 exercises the blend; autocast as the loop's train.precision
        train_step(model, optimizer, *(batch or views), lr=0.05, tau=0.99, alpha=0.5, autocast_dtype=autocast)

    return step


def bench_step(arch: str, image_size: int, batch: int, repeats: int, sync=None, **options) -> None:
    steps = {norm: make_step(arch, image_size, batch, norm, **options) for norm in ("bn", "mbn")}
    times = _timing.interleaved(steps, repeats, sync=sync)
    print(f"\n{arch} {image_size} px, {batch} images x 2 views, teacher norm bn vs mbn "
          f"({repeats} steps each):")
    _timing.report(times, "bn", per_call=batch)


def bench_layer(repeats: int, device: str = "cpu", sync=None) -> None:
    x = torch.randn(32, 64, 48, 48, device=device)
    bn = nn.BatchNorm2d(64).to(device).train()
    momentum_bn = MomentumBatchNorm2d(64).to(device).train()
    set_alpha(momentum_bn, 0.5)

    def momentum_bn_view() -> None:
        with deferred_update(momentum_bn):
            momentum_bn(x)

    def discarded_batch_norm() -> None:  # the core's former way to the statistics
        running_mean, running_var = torch.zeros(64, device=device), torch.ones(64, device=device)
        F.batch_norm(x, running_mean, running_var, training=True, momentum=1.0)

    fns = {
        "BatchNorm2d": lambda: bn(x),
        "MomentumBatchNorm2d": momentum_bn_view,
        "stats: torch.var_mean": lambda: torch.var_mean(x, dim=(0, 2, 3), correction=0),
        "stats: batch_norm, output discarded": discarded_batch_norm,
        "stats: batch_norm_update_stats (core)": lambda: torch.batch_norm_update_stats(x, None, None, 1.0),
    }
    with torch.no_grad():
        times = _timing.interleaved(fns, repeats, warmup=5, sync=sync)
    print("\nlayer alone, 32x64x48x48, training mode, no grad (Momentum BN: one view and its commit),")
    print("and three ways to the per-channel batch statistics alone:")
    _timing.report(times, "BatchNorm2d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per side")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated arch:px:batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(_timing.machine())
    for size in args.sizes.split(","):
        arch, px, batch = size.split(":")
        bench_step(arch, int(px), int(batch), args.repeats)
    bench_layer(10 * args.repeats)


if __name__ == "__main__":
    main()
