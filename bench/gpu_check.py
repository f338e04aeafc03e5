"""One command for a session lent a GPU: check the CUDA paths, then time them.

Checks (each prints PASS or FAIL; the exit status is 1 if any fails):
  * Momentum BN on CUDA (float32) equals the CPU float64 layer: outputs of both views of a
    lazy update and the committed history, for 2d and 1d layers; under bf16 autocast it is
    close (bf16 tolerance);
  * SyncBatchNorm on CUDA defers to torch's implementation (our CPU all-gather path unused);
  * NCCL initialises with world size 1 and, with 2+ GPUs, with 2 processes, where
    SyncBatchNorm over the two halves of a batch equals BN over the whole batch.
  * the real ``pretrain`` loop (repro.train.pretrain) runs a few steps per norm mode of Table 1
    (student bn / syncbn, teacher bn / syncbn / mbn) on CUDA with NCCL, in 1 process and, with
    2+ GPUs, in 2, at the chosen train.precision / channels_last / compile, with a finite loss;
  * one step of the loop's own step function (repro.train.step.train_step) synchronises with
    the host 0 times (torch.cuda.set_sync_debug_mode; fp16's grad scaler reads once by design);
  * emulated devices (train.devices): 4 devices of BN and of Momentum BN on CUDA equal 4 CPU
    float64 layers, one per device, and the loop runs every norm mode in 1 process x 4 devices;
  * batched augmentation (data.augmentation_mode: batched) makes the same views on CUDA as on
    the CPU, and the time of the views of Table 1's paper-1x64 step (2,048 images of 96 px).
A diagnostic counts host-device synchronisations in one Momentum BN teacher forward. Then
the figures of bench_momentum_bn.py (step bn vs mbn, layer alone) and bench_floor.py
(floor and efficiency, EMA foreach vs loops) on the GPU, and bench_devices.py at Table 1's
paper-1x64 shape (64 devices x 32 images at 96 px against plain BN over 2,048; 40+ GiB GPUs).

    python bench/gpu_check.py [--bf16] [--channels-last] [--compile] [--repeats 20]

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import socket
import sys
import tempfile
import warnings
from unittest import mock

import _timing
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.testing import assert_close

from bench_devices import compare
from bench_floor import bench_ema, bench_floor
from bench_momentum_bn import bench_layer, bench_step
from repro.grid import expand, load_table
from repro.models.backbones import build_student_teacher
from repro.core import sync_bn
from repro.core.momentum_bn import MomentumBatchNorm1d, MomentumBatchNorm2d, deferred_update, set_alpha

FAILED: list[str] = []


def check(name: str, fn) -> None:
    try:
        fn()
        print(f"PASS  {name}")
    except Exception as error:  # report every check, then exit 1
        FAILED.append(name)
        print(f"FAIL  {name}: {type(error).__name__}: {error}")


def momentum_bn_matches_cpu_float64(device: str = "cuda") -> None:
    g = torch.Generator().manual_seed(0)
    for layer, shape in ((MomentumBatchNorm2d(16), (8, 16, 12, 12)), (MomentumBatchNorm1d(16), (32, 16))):
        with torch.no_grad():
            for p in (layer.weight, layer.running_var):
                p.copy_(torch.rand(16, generator=g) + 0.5)
            for p in (layer.bias, layer.running_mean):
                p.copy_(torch.randn(16, generator=g))
        set_alpha(layer, 0.3)
        views = [torch.randn(*shape, generator=g) * 2 + 1 for _ in range(2)]
        results = []
        for on, dtype in (("cpu", torch.float64), (device, torch.float32)):
            m = copy.deepcopy(layer).to(on, dtype).train()
            with torch.no_grad(), deferred_update(m):
                outs = [m(v.to(on, dtype)) for v in views]
            results.append([t.double().cpu() for t in outs + [m.running_mean, m.running_var]])
        for cpu, cuda in zip(*results):
            assert_close(cuda, cpu, rtol=1e-4, atol=1e-4)


def momentum_bn_bf16_autocast_close(device: str = "cuda") -> None:
    layer = MomentumBatchNorm2d(16).train()
    set_alpha(layer, 0.3)
    x = torch.randn(8, 16, 12, 12, generator=torch.Generator().manual_seed(1)) * 2 + 1
    reference = copy.deepcopy(layer).double()
    with torch.no_grad():
        expected = reference(x.double())
        with torch.autocast(device, dtype=torch.bfloat16):
            out = layer.to(device)(x.to(device, torch.bfloat16))
    assert_close(out.double().cpu(), expected, rtol=0.05, atol=0.05)
    assert_close(layer.running_var.double().cpu(), reference.running_var, rtol=0.02, atol=0.02)


def count_syncs_in_teacher_forward() -> None:
    """Diagnostic: host-device synchronisations in one Momentum BN teacher forward (2 views)."""
    model = build_student_teacher("resnet18", teacher_norm="mbn").cuda().train()
    views = [torch.randn(8, 3, 64, 64, device="cuda") for _ in range(2)]
    model.teacher_forward(*views)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            model.teacher_forward(*views)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    layers = sum(1 for m in model.teacher.modules() if isinstance(m, MomentumBatchNorm2d | MomentumBatchNorm1d))
    print(f"INFO  host-device syncs in one ResNet-18 Momentum BN teacher forward: {len(caught)} "
          f"({layers} Momentum BN layers)")


LOOP_ROWS = ("bn-bn", "bn-mbn", "syncbn-syncbn", "syncbn-mbn")  # Table 1: every norm of each side


def loop_configs(world_size: int, precision: str = "fp32", channels_last: bool = False, compile: bool = False,
                 steps: int = 4, devices: int = 1) -> dict:
    """Table 1's smoke configs, one per norm mode, for ``steps`` steps of the real loop."""
    out = {}
    for run in expand(load_table("t01"), "smoke"):
        if run.row in LOOP_ROWS:
            train = dataclasses.replace(run.config.train, world_size=world_size, max_steps=steps,
                                        precision=precision, channels_last=channels_last, compile=compile,
                                        checkpoint_every=steps, log_every=2, devices=devices)
            out[run.row] = dataclasses.replace(run.config, train=train)
    return out


def loop_worker(rank: int, world_size: int, port: int, cfg, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    from repro.train.pretrain import pretrain

    try:
        summary, _ = pretrain(cfg, run_dir, progress=False)
        torch.save(summary, os.path.join(run_dir, f"summary{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def pretrain_loop_on_cuda(world_size: int, **options) -> None:
    for row, cfg in loop_configs(world_size, **options).items():
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(loop_worker, args=(world_size, free_port(), cfg, tmp), nprocs=world_size)
            summary = torch.load(os.path.join(tmp, "summary0.pt"))
        assert summary["steps"] == cfg.train.max_steps and summary["device"].startswith("cuda"), (row, summary)
        assert torch.isfinite(torch.tensor(summary["final_loss"])), (row, summary["final_loss"])
        print(f"INFO  pretrain {row}, {world_size} process(es) x {cfg.train.devices} device(s): {summary['steps']} steps, "
              f"loss {summary['final_loss']:.4f}, {summary['sec_per_iter']:.4f} s/step")


def devices_match_cpu_float64(device: str = "cuda") -> None:
    """4 emulated devices on CUDA (BN and Momentum BN, lazy update) == one CPU float64 layer per device."""
    from repro.core.devices import convert_to_device_bn, device_buffers
    from repro.core.momentum_bn import convert_to_momentum_bn

    g = torch.Generator().manual_seed(0)
    v1, v2 = (torch.randn(16, 8, 6, 6, generator=g, dtype=torch.float64) * 2 + 1 for _ in range(2))
    for convert in (convert_to_device_bn, lambda m, d: convert_to_momentum_bn(m, devices=d)):
        layer = convert(nn.BatchNorm2d(8), 4).double().to(device).train()
        refs = [(convert(nn.BatchNorm2d(8), 1) if convert is not convert_to_device_bn else nn.BatchNorm2d(8))
                .double().train() for _ in range(4)]
        for m in (layer, *refs):
            set_alpha(m, 0.5)
        with torch.no_grad(), deferred_update(layer):
            outs = [layer(v1.to(device)), layer(v2.to(device))]
        for k, ref in enumerate(refs):
            with torch.no_grad(), deferred_update(ref):
                want = [ref(v1[k::4]), ref(v2[k::4])]
            for got, w in zip(outs, want):
                assert_close(got[k::4].cpu(), w)
            own = device_buffers(layer, k)
            for name, value in ref.named_buffers():
                assert_close(own[name], value)


def batched_views_match_cpu(device: str = "cuda") -> None:
    """The batched augmentation on CUDA makes the CPU's views (same parameters; one grey level of
    rounding, the blur's and resize's float order aside)."""
    from repro.data.batched import BatchedTwoView, byol_specs

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 96, 96), generator=g, dtype=torch.uint8)
    augment = BatchedTwoView(byol_specs(96), seed=0)
    cpu = augment(images, list(range(64)), 0)
    gpu = augment(images.to(device), list(range(64)), 0)
    for a, b in zip(cpu, gpu):
        diff = (a - b.cpu()).abs() * 0.229 * 255  # back to grey levels (ImageNet std, the smallest)
        assert diff.max() <= 2.5 and diff.mean() < 0.05, (float(diff.max()), float(diff.mean()))


def time_batched_views(device: str = "cuda", repeats: int = 10) -> None:
    """Seconds to make the two views of Table 1's paper-1x64 step (64 devices x 32 = 2,048 STL10
    images of 96 px) on the GPU, batched."""
    from repro.data.batched import BatchedTwoView, byol_specs

    images = torch.randint(0, 256, (2048, 3, 96, 96), dtype=torch.uint8, device=device)
    augment = BatchedTwoView(byol_specs(96), seed=0)
    times = _timing.interleaved({"batched views": lambda: augment(images, list(range(2048)), 0)}, repeats,
                                sync=torch.cuda.synchronize)
    print(f"INFO  batched two-view augmentation, 2,048 images of 96 px on {device}: "
          f"{1e3 * _timing.median(times['batched views']):.0f} ms a step")


def train_step_has_no_sync(precision: str = "fp32") -> None:
    from repro.train.step import AUTOCAST_DTYPES, LossWatch, train_step

    model = build_student_teacher("resnet18", teacher_norm="mbn").cuda().train()
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9)
    views = [torch.randn(8, 3, 64, 64, device="cuda") for _ in range(2)]
    watch = LossWatch(torch.device("cuda"))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    kw = dict(lr=0.05, tau=0.99, alpha=0.5, autocast_dtype=AUTOCAST_DTYPES[precision], scaler=scaler)
    watch.observe(train_step(model, optimizer, *views, **kw), 0, 0.05)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            watch.observe(train_step(model, optimizer, *views, **kw), 1, 0.05)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    allowed = 1 if scaler is not None else 0
    assert len(caught) <= allowed, [str(w.message) for w in caught]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch() -> torch.Tensor:
    return torch.randn(16, 8, 6, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1


WEIGHTS = torch.linspace(-1, 1, 16 * 8 * 6 * 6).view(16, 8, 6, 6)  # a loss that is not symmetric


def sync_bn_worker(rank: int, world_size: int, port: int, out_dir: str, device: str) -> None:
    """Each rank normalises its part of one batch; save outputs and input gradients.

    On CUDA (NCCL) our CPU all-gather path must stay unused: it is made to raise.
    """
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    try:
        part = batch().chunk(world_size)[rank].to(device).requires_grad_(True)
        bn = sync_bn.SyncBatchNorm(8).to(device).train()
        cpu_path = mock.patch.object(sync_bn.dist_nn, "all_gather", side_effect=AssertionError("CPU path"))
        with cpu_path if cuda else contextlib.nullcontext():
            out = bn(part)
        (out * WEIGHTS.chunk(world_size)[rank].to(device)).sum().backward()
        torch.save({"out": out.detach().cpu(), "grad": part.grad.cpu()}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def sync_bn_in_processes(world_size: int, device: str = "cuda") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(sync_bn_worker, args=(world_size, free_port(), tmp, device), nprocs=world_size)
        ranks = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(world_size)]
    x = batch().double().requires_grad_(True)
    out = nn.BatchNorm2d(8).double().train()(x)
    (out * WEIGHTS).sum().backward()
    assert_close(torch.cat([r["out"] for r in ranks]).double(), out.detach(), rtol=1e-4, atol=1e-4)
    assert_close(torch.cat([r["grad"] for r in ranks]).double(), x.grad, rtol=1e-3, atol=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in the timed steps and the loop")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in the timed step")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sizes", default="resnet18:96:128,resnet50:224:64", help="arch:px:batch")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check.")
        return
    torch.backends.cudnn.benchmark = True
    print(_timing.machine("cuda") + f", {torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}")

    check("Momentum BN on CUDA == CPU float64", momentum_bn_matches_cpu_float64)
    check("Momentum BN under bf16 autocast on CUDA ~ CPU float64", momentum_bn_bf16_autocast_close)
    check("sync count (diagnostic)", count_syncs_in_teacher_forward)
    check("SyncBatchNorm on CUDA uses torch's implementation, NCCL world size 1",
          lambda: sync_bn_in_processes(1))
    if torch.cuda.device_count() >= 2:
        check("NCCL world size 2: SyncBatchNorm over 2 GPUs == BN over the whole batch",
              lambda: sync_bn_in_processes(2))
    else:
        print("SKIP  NCCL world size 2 (one GPU)")
    precision = "bf16" if args.bf16 else "fp32"
    loop_options = dict(precision=precision, channels_last=args.channels_last, compile=args.compile)
    check(f"train_step ({precision}) synchronises 0 times", lambda: train_step_has_no_sync(precision))
    check("train_step (fp16, grad scaler) synchronises at most once", lambda: train_step_has_no_sync("fp16"))
    check("pretrain loop on CUDA, 1 process, every Table 1 norm mode",
          lambda: pretrain_loop_on_cuda(1, **loop_options))
    check("emulated devices on CUDA: 4 devices == 4 CPU float64 layers (BN, Momentum BN)", devices_match_cpu_float64)
    check("batched augmentation on CUDA == on the CPU", batched_views_match_cpu)
    check("batched augmentation timing (diagnostic)", time_batched_views)
    check("pretrain loop on CUDA, 1 process x 4 emulated devices, every Table 1 norm mode",
          lambda: pretrain_loop_on_cuda(1, devices=4, **loop_options))
    if torch.cuda.device_count() >= 2:
        check("pretrain loop on CUDA, NCCL world size 2, every Table 1 norm mode",
              lambda: pretrain_loop_on_cuda(2, **loop_options))

    options = dict(device="cuda", autocast=torch.bfloat16 if args.bf16 else None,
                   channels_last=args.channels_last)
    print(f"\noptions: bf16 autocast {args.bf16}, channels_last {args.channels_last}, compile {args.compile}")
    for size in args.sizes.split(","):
        arch, px, batch = size.split(":")
        bench_step(arch, int(px), int(batch), args.repeats, sync=torch.cuda.synchronize,
                   compile=args.compile, **options)
        bench_floor(arch, int(px), int(batch), args.repeats, sync=torch.cuda.synchronize, **options)
    bench_layer(5 * args.repeats, device="cuda", sync=torch.cuda.synchronize)
    # Table 1's paper-1x64 profile on this GPU: 64 devices x 32 images of 96 px (2,048 a view)
    # against plain BN over 2,048: the step time of the one-GPU profile and the devices' overhead.
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    if memory >= 40:
        compare(64, 32, 96, 64, max(3, args.repeats // 4), device="cuda", sync=torch.cuda.synchronize,
                rows=(("bn", "mbn"),))
    else:
        print(f"SKIP  Table 1 paper-1x64 step (64 x 32 at 96 px needs about 17 GiB per model; {memory:.0f} GiB here)")
    for arch in ("resnet18", "resnet50"):
        bench_ema(arch, 5 * args.repeats, device="cuda", sync=torch.cuda.synchronize)
    if FAILED:
        print(f"\n{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
