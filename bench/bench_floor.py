"""The floor: a training step against the sum of its parts, each timed alone.

Parts: student forward + backward on two views (against fixed teacher outputs), teacher
forward on two views (lazy Momentum BN update), optimiser step, EMA (+ set alpha).
Efficiency = floor / step; issue 8 asks for at least 0.9. Then the EMA alone: the core's
foreach update (torch._foreach_lerp_) against per-parameter loops.

    python bench/bench_floor.py [--arch resnet18] [--image-size 96] [--batch 8] [--repeats 10]
"""

from __future__ import annotations

import argparse

import _timing
import torch

from bench_momentum_bn import make_step
from repro.models.backbones import build_student_teacher
from repro.core.ema import ema_update
from repro.core.model import symmetrised_loss


def parts(arch: str, image_size: int, batch: int, teacher_norm: str = "mbn", *, device: str = "cpu",
          autocast: torch.dtype | None = None, channels_last: bool = False, seed: int = 0):
    """Closures for each part of the step, on a model and batch like make_step's."""
    torch.manual_seed(seed)
    model = build_student_teacher(arch, teacher_norm=teacher_norm)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    v1, v2 = (torch.randn(batch, 3, image_size, image_size).to(device, memory_format=memory_format)
              for _ in range(2))
    autocast_on = dict(device_type=device.split(":")[0], dtype=autocast, enabled=autocast is not None)
    with torch.autocast(**autocast_on):
        k1, k2 = model.teacher_forward(v1, v2)

    def student() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(**autocast_on):
            loss = symmetrised_loss(model.student(v1), model.student(v2), k1, k2)
        loss.backward()

    def teacher() -> None:
        with torch.autocast(**autocast_on):
            model.teacher_forward(v1, v2)

    def ema() -> None:
        model.update_teacher(0.99)
        model.set_alpha(0.5)

    student()  # gradients for the optimiser part
    return {"student fwd+bwd": student, "teacher fwd": teacher, "optimiser step": optimizer.step, "EMA": ema}


def bench_floor(arch: str, image_size: int, batch: int, repeats: int, sync=None, **options) -> None:
    fns = {"step": make_step(arch, image_size, batch, "mbn", **options)}
    fns.update(parts(arch, image_size, batch, "mbn", **options))
    times = _timing.interleaved(fns, repeats, sync=sync)
    print(f"\n{arch} {image_size} px, {batch} images x 2 views, teacher mbn ({repeats} rounds):")
    _timing.report(times, "step")
    floor = sum(_timing.median(ts) for name, ts in times.items() if name != "step")
    print(f"floor (sum of parts) {1e3 * floor:.1f} ms, step {1e3 * _timing.median(times['step']):.1f} ms, "
          f"efficiency floor/step = {floor / _timing.median(times['step']):.3f}")


def bench_ema(arch: str, repeats: int, device: str = "cpu", sync=None) -> None:
    model = build_student_teacher(arch).to(device)
    teacher, student = model.teacher.encoder, model.student.encoder
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    tau = 0.99

    @torch.no_grad()
    def loop_lerp() -> None:
        for t, s in zip(t_params, s_params):
            t.lerp_(s, 1 - tau)

    @torch.no_grad()
    def loop_data() -> None:  # the common form in BYOL re-implementations
        for t, s in zip(t_params, s_params):
            t.data = tau * t.data + (1 - tau) * s.data

    fns = {"foreach (core ema_update)": lambda: ema_update(teacher, student, tau),
           "loop t.lerp_(s)": loop_lerp, "loop t.data = ...": loop_data}
    times = _timing.interleaved(fns, repeats, warmup=3, sync=sync)
    print(f"\nEMA of the {arch} encoder alone ({len(t_params)} tensors, "
          f"{sum(p.numel() for p in t_params) / 1e6:.1f} M parameters):")
    _timing.report(times, "foreach (core ema_update)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _timing.step_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(_timing.machine())
    bench_floor(args.arch, args.image_size, args.batch, args.repeats)
    for arch in ("resnet18", "resnet50"):
        bench_ema(arch, 5 * args.repeats)


if __name__ == "__main__":
    main()
