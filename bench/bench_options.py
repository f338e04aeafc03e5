"""The loop's speed options on this CPU: train.channels_last and train.precision (bf16 autocast).

One step is the training loop's own (repro.train.step.train_step, via bench_momentum_bn's
make_step): a ResNet-18 student-teacher with a Momentum BN teacher, SGD. Sides, interleaved:
fp32 (today's step), channels_last, bf16 autocast, bf16 + channels_last; the same seed gives
the same weights and batch to each. Issue 16's figures (AVX512-BF16 CPU, one thread, width 32,
32 px, batch 64): fp32 247 ms, channels_last 0.92x, bf16 0.85x, bf16 + channels_last 0.63x.
On a CPU without native bf16 (no AVX512-BF16 / AMX) bf16 is emulated and slower.

    python bench/bench_options.py [--width 32] [--image-size 32] [--batch 64] [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import argparse

import _timing
import torch

from bench_momentum_bn import make_step

SIDES = {  # name -> make_step options
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"autocast": torch.bfloat16},
    "bf16+channels_last": {"autocast": torch.bfloat16, "channels_last": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _timing.step_arguments(parser, arch_choices=["resnet18", "resnet50"], batch_help="images per view", threads=1)
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated, of " + ", ".join(SIDES))
    parser.set_defaults(image_size=32, batch=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(_timing.machine())
    cpu_flags = open("/proc/cpuinfo").read() if _has_proc() else ""
    print(f"native bf16 (avx512_bf16 or amx_bf16): {'avx512_bf16' in cpu_flags or 'amx_bf16' in cpu_flags}")
    steps = {name: make_step(args.arch, args.image_size, args.batch, "mbn", width=args.width, **SIDES[name])
             for name in args.sides.split(",")}
    times = _timing.interleaved(steps, args.repeats)
    print(f"\n{args.arch} width {args.width}, {args.image_size} px, {args.batch} images x 2 views, "
          f"Momentum BN teacher, {args.threads} thread(s), {args.repeats} steps each:")
    _timing.report(times, next(iter(steps)), per_call=args.batch)


def _has_proc() -> bool:
    import os

    return os.path.exists("/proc/cpuinfo")


if __name__ == "__main__":
    main()
