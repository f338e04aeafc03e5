"""Per-image against batched two-view augmentation, in the loop's own step.

One step is what the pre-training loop does (repro.train.pretrain): the next batch from its
DataLoader (workers 0, as the CPU profiles run), the two views (made image by image in the
loader, or on the whole batch: data.augmentation_mode), then train_step. Both sides run the
same model on the same images, interleaved. Goal (issue 26): batched at most 0.55x per-image
at 28 px, batch 32, one thread (the cpu-mnist network: ResNet-18 width 32, standard stem).
Then the views alone at 96 px, batch 256 (STL10's size; the model step is left out there: on
this CPU it would take most of a minute and hide the difference).

    python bench/bench_augment.py [--repeats 30] [--threads 1] [--big-repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses

import _timing
import torch

from repro.grid import expand, load_table
from repro.models.backbones import model_from_config
from repro.train.pretrain import _epoch_loader, _two_view_data, _views, build_optimizer
from repro.train.step import train_step


def config(mode: str, image_size: int, batch: int):
    """cpu-mnist's Table 1 BN / Momentum BN row, one process of ``batch`` images."""
    run = next(r for r in expand(load_table("t01"), "cpu-mnist") if r.row == "bn-mbn")
    c = run.config
    return dataclasses.replace(c, data=dataclasses.replace(c.data, augmentation_mode=mode, image_size=image_size),
                               train=dataclasses.replace(c.train, world_size=1, bn_batch_size=batch))


def make_step(mode: str, image_size: int, batch: int, *, model_step: bool = True):
    cfg = config(mode, image_size, batch)
    dataset, sampler, augment = _two_view_data(cfg, 0)
    torch.manual_seed(0)
    model = model_from_config(cfg).train()
    optimizer = build_optimizer(model, cfg)
    state = {"epoch": 0, "it": None}
    cpu = torch.device("cpu")

    def step() -> None:
        batch_ = next(state["it"], None) if state["it"] is not None else None
        if batch_ is None:  # a new epoch
            state["it"] = _epoch_loader(dataset, sampler, cfg, cpu, state["epoch"], 0)
            state["epoch"] += 1
            batch_ = next(state["it"])
        view1, view2 = _views(batch_, augment, state["epoch"], cpu, torch.float32, torch.contiguous_format)
        if model_step:
            train_step(model, optimizer, view1, view2, lr=0.05, tau=0.99, alpha=0.5)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--big-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(_timing.machine())
    steps = {mode: make_step(mode, 28, 32) for mode in ("per_image", "batched")}
    print(f"\nthe loop's step, mnist5k 28 px, batch 32 x 2 views, ResNet-18 width 32 ({args.repeats} steps each):")
    _timing.report(_timing.interleaved(steps, args.repeats), "per_image", per_call=32)
    views = {mode: make_step(mode, 96, 256, model_step=False) for mode in ("per_image", "batched")}
    print(f"\nthe views alone (loader + augmentation), 96 px, batch 256 x 2 views ({args.big_repeats} batches each):")
    _timing.report(_timing.interleaved(views, args.big_repeats, warmup=1), "per_image", per_call=256)


if __name__ == "__main__":
    main()
