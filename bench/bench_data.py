"""Data: can the two-view augmentation pipeline feed a training step?

For digits at 16 px (the local profile: half-width ResNet-18 with a 3x3 stem, 32 images per
process, 1 thread per process) and synthetic images at 96 px (ResNet-18 at the STL10 size),
interleaved in one run:
  * the loader alone with 0, 1 and 2 DataLoader workers, a fresh loader per call as
    repro/train/pretrain.py makes one per epoch; its first batch (worker start-up) is shown apart;
  * K training steps on one cached batch: what the step consumes, without loading;
  * K training steps fed by a fresh loader with 0 and 1 workers: the loader in the loop.
The loader is a bottleneck where feeding the step from it is clearly slower than the cached
batch. Here one training process uses 1 thread, so a worker may get the other core; in the
local profile both cores train (2 processes x 1 thread) and the loader's CPU time adds to
the step's whatever the worker count: the "train, loader 0 workers" row shows that cost.

    python bench/bench_data.py [--threads 1] [--batches 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import time

import _timing
import torch
from torch.utils.data import DataLoader

from bench_momentum_bn import make_step
from repro.data.augment import TwoViewDataset, two_view_transforms
from repro.data.datasets import build_dataset, dataset_stats

WORKERS = (0, 1, 2)
SETUPS = {
    "digits 16 px": dict(dataset="digits", size=16, batch=32,
                         transforms=dict(crop_scale=(0.25, 1.0), hflip=False),
                         model=dict(arch="resnet18", width=32, small_stem=True)),
    "synthetic 96 px": dict(dataset="synthetic", size=96, batch=8, transforms={},
                            model=dict(arch="resnet18")),
}


def run(name: str, batches: int, repeats: int) -> None:
    setup = SETUPS[name]
    size, batch = setup["size"], setup["batch"]
    mean, std = dataset_stats(setup["dataset"])
    t1, t2 = two_view_transforms(size, normalize_mean=mean, normalize_std=std, **setup["transforms"])
    dataset = TwoViewDataset(build_dataset(setup["dataset"], None, "train", size), t1, t2, seed=0)

    def batches_from(workers: int):
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers)
        return itertools.islice(loader, batches)

    first_batch: dict[int, list[float]] = {w: [] for w in WORKERS}

    def load(workers: int):
        def run_loader() -> None:
            start = time.perf_counter()
            for i, _ in enumerate(batches_from(workers)):
                if i == 0:
                    first_batch[workers].append(time.perf_counter() - start)
        return run_loader

    step = make_step(image_size=size, batch=batch, teacher_norm="mbn", **setup["model"])
    cached = next(iter(batches_from(0)))

    def train(workers: int | None):
        def run_steps() -> None:
            for views in (batches_from(workers) if workers is not None else [cached] * batches):
                step(*views)
        return run_steps

    fns = {f"loader, {w} workers": load(w) for w in WORKERS}
    fns.update({"train, cached batch": train(None), "train, loader 0 workers": train(0),
                "train, loader 1 worker": train(1)})
    times = _timing.interleaved(fns, repeats, warmup=1)
    print(f"\n{name}: {batches} batches of {batch} images (2 views each) per call, {repeats} calls:")
    _timing.report(times, "train, cached batch", per_call=batches * batch)
    rows = []
    for w in WORKERS:
        first = _timing.median(first_batch[w][-repeats:])
        rest = _timing.median(times[f"loader, {w} workers"]) - first
        rows.append([w, 1e3 * first, (batches - 1) * batch / rest])
    print("the loader alone, split into its first batch (start-up included) and the rest:")
    _timing.table(rows, ["workers", "first batch ms", "images/s after it"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(_timing.machine())
    for name in SETUPS:
        run(name, args.batches, args.repeats)


if __name__ == "__main__":
    main()
