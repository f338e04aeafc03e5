"""Emulated devices: the loop's own step with G devices of n images against plain BN over G * n.

One step is the training loop's (repro.train.step.train_step) on the same global batch, the same
weights and the same views, interleaved with the plain step: the only difference is that every
BN (and Momentum BN) normalises each device's n images alone. Goal (issue 25): at most 1.10x a
plain-BN step, ResNet-18 width 32 at 28 px (the cpu-mnist network), 8 devices x 4, one thread.

    python bench/bench_devices.py [--devices 8] [--per-device 4] [--repeats 40] [--threads 1]
"""

from __future__ import annotations

import argparse

import _timing
import torch

from repro.models.backbones import build_student_teacher
from repro.train.step import train_step


def make_step(student_norm: str, teacher_norm: str, devices: int, batch: int, image_size: int, width: int,
              seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    model = build_student_teacher("resnet18", student_norm=student_norm, teacher_norm=teacher_norm,
                                  width=width, devices=devices).to(device).train()
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch, 3, image_size, image_size, generator=g).to(device) for _ in range(2)]

    def step() -> None:
        train_step(model, optimizer, *views, lr=0.05, tau=0.99, alpha=0.5)

    return step


def compare(devices: int, per_device: int, image_size: int, width: int, repeats: int, *, device: str = "cpu",
            sync=None, rows=(("bn", "bn"), ("bn", "mbn"))) -> None:
    """Print the emulated step against the plain step of the same global batch, per row."""
    batch = devices * per_device
    for student, teacher in rows:
        steps = {
            f"plain BN over {batch}": make_step(student, teacher, 1, batch, image_size, width, device=device),
            f"{devices} devices x {per_device}": make_step(student, teacher, devices, batch, image_size, width,
                                                         device=device),
        }
        times = _timing.interleaved(steps, repeats, sync=sync)
        print(f"\nstudent {student} / teacher {teacher}: ResNet-18 width {width} at {image_size} px, "
              f"{batch} images x 2 views a step on {device} ({repeats} steps each, interleaved)")
        _timing.report(times, next(iter(steps)), per_call=batch)
        del steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--per-device", type=int, default=4, help="images per device (the BN batch)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(_timing.machine())
    compare(args.devices, args.per_device, args.image_size, args.width, args.repeats)


if __name__ == "__main__":
    main()
