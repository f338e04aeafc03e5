"""Semi-supervised fine-tuning of the whole network (Table 12, Section 4.6, SPEC §4).

A pre-trained backbone (torchvision layout, `repro.transfer.pretrained.resolve_backbone`) plus a
linear classifier over all classes is trained end to end on a labelled fraction of the training
set, then its BN statistics are re-estimated and it is tested.

FIDELITY (Section 4.6): the SimCLR 1% / 10% ImageNet splits, batch 1024, lr 0.08, cosine decay
(no warm-up is mentioned: none), 20 epochs (1%) / 15 epochs (10%), "the statistics of BN are
recounted" after training, top-1 / top-5 on the validation set. SGD with momentum 0.9 and no
weight decay (SimCLR's fine-tuning protocol the paper follows; neither is stated).
RandomResizedCrop + flip for training (the only augmentation of that protocol).

FIDELITY (one process instead of 8 GPUs): the paper's 8 GPUs x 128 images are reproduced by
accumulating micro-batches of `finetune.micro_batch_size` into one step of `finetune.batch_size`:
the gradient is the same mean over the whole batch, and each BN sees 128 samples, as on each GPU.
The BN re-estimation then averages `finetune.bn_reestimate_batches` micro-batches of training
images (augmented as in training) in train mode with cumulative averaging (BatchNorm momentum
None), without gradients.

Small built-in data (the local / smoke profiles): the labelled fraction is
`deterministic_subset` of the probe's training split (DEVIATION: a stand-in for the SimCLR lists;
the digits' 1% is one image per class, 10 images, 10% is 145), tested on the probe's test
split. When the subset is smaller than `finetune.batch_size`, a step takes the whole subset and
the lr is scaled linearly with it (lr x subset / batch_size): the same lr per sample.

Deterministic under `train.seed`: the head's initialisation, the order of each epoch and every
image's augmentation depend on (seed, epoch, index) only. A checkpoint is written after every
epoch (atomically, `repro.train.checkpoint`) and a restarted run resumes from the last one exactly.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import ConfigError, FinetuneConfig
from ..core import schedules
from ..data.augment import SeededTransformed, Transformed, derive_seed, probe_train_transform
from ..data.datasets import ImageFiles, build_dataset, dataset_stats, num_classes, split_for
from ..data.imagenet_subsets import deterministic_subset, subset_samples
from ..models.backbones import resnet
from ..rundir import RunDir
from . import checkpoint as ckpt
from .loop import MetricsLog, check_finite, eval_transform_for, set_lr, topk_hits

# The split of built-in data does not depend on the training seed: like the SimCLR lists, it is
# one fixed subset that every seed fine-tunes on.
SPLIT_SEED = 0
EVAL_BATCH = 256


class Classifier(nn.Module):
    """The backbone (its `fc` is Identity) followed by a linear layer over all classes."""

    def __init__(self, encoder: nn.Module, classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def labelled_subset(cfg: FinetuneConfig) -> tuple[Dataset, Dataset, int]:
    """(training subset, test set, classes) of the run's dataset at `finetune.percent`."""
    name, root, size = cfg.data.dataset, cfg.data.root, cfg.data.image_size
    percent = cfg.finetune.percent
    if name == "imagenet":
        if root is None:
            raise ConfigError("data.root: ImageNet fine-tuning needs --data-root (train/ and val/ folders)")
        train = ImageFiles(subset_samples(Path(root) / "train", percent))
        test = build_dataset(name, root, "val", size)
        return train, test, num_classes(name)
    if name == "stl10":
        raise ConfigError("data.dataset: Table 12 fine-tunes on ImageNet (paper) or built-in data (digits)")
    base = build_dataset(name, root, split_for(name, "probe_train"), size)
    labels = base.labels.tolist() if hasattr(base, "labels") else [label for _, label in base]
    indices = deterministic_subset(labels, percent / 100, seed=SPLIT_SEED)
    test = build_dataset(name, root, split_for(name, "probe_test"), size)
    return Subset(base, indices), test, num_classes(name)


def _train_transform(cfg: FinetuneConfig):
    mean, std = dataset_stats(cfg.data.dataset)
    return probe_train_transform(cfg.data.image_size, crop_scale=cfg.data.crop_scale, hflip=cfg.data.hflip,
                                 normalize_mean=mean, normalize_std=std)


def _epoch_chunks(n: int, batch: int, micro: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """The epoch's steps, each a list of micro-batches (index lists): a seeded permutation in
    full batches (the tail that does not fill one is dropped), cut into micro-batches."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    order = torch.randperm(n, generator=generator).tolist()
    steps = []
    for s in range(schedules.steps_per_epoch(n, batch)):
        step = order[s * batch:(s + 1) * batch]
        steps.append([step[i:i + micro] for i in range(0, batch, micro)])
    return steps


def _loader(dataset: Dataset, chunks: list[list[int]], cfg: FinetuneConfig, device) -> DataLoader:
    return DataLoader(dataset, batch_sampler=chunks, num_workers=cfg.data.workers, pin_memory=device.type == "cuda")


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches, num_batches: int) -> int:
    """Recount every BatchNorm's running statistics over `num_batches` batches (train mode,
    no gradient): running_mean / running_var become the plain average of the batches' mean /
    unbiased variance (momentum None). Returns the number of batches used. The model is left in
    eval mode, its BN momenta as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen since the reset
    model.train()
    used = 0
    for x in batches:
        if used == num_batches:
            break
        model(x)
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return used


@torch.no_grad()
def evaluate(model: nn.Module, test: Dataset, transform, cfg: FinetuneConfig, device) -> tuple[float, float]:
    """(top-1, top-5) in % on `test`."""
    model.eval()
    loader = DataLoader(Transformed(test, transform), batch_size=EVAL_BATCH, num_workers=cfg.data.workers)
    correct1 = correct5 = total = 0
    for x, y in loader:
        y = torch.as_tensor(y)
        hit1, hit5 = topk_hits(model(x.to(device)).float().cpu(), y)
        correct1 += hit1.sum().item()
        correct5 += hit5.sum().item()
        total += len(y)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def _train_epoch(model: nn.Module, optimizer, augmented: SeededTransformed, cfg: FinetuneConfig, device, epoch: int,
                 step: int, *, lr: float, total_steps: int, batch: int, micro: int) -> tuple[int, float]:
    """One epoch of full-batch steps, each accumulated over micro-batches; returns (step, last loss)."""
    model.train()
    augmented.set_epoch(epoch)
    epoch_steps = _epoch_chunks(len(augmented), batch, micro, cfg.train.seed, epoch)
    batches = iter(_loader(augmented, [c for s in epoch_steps for c in s], cfg, device))
    loss_value = math.nan
    for chunks in epoch_steps:
        set_lr(optimizer, lr * schedules.cosine_ramp(step, total_steps))
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in chunks:
            x, y = next(batches)
            # Sum over the micro-batch / whole batch: the gradient of the batch's mean loss.
            loss = F.cross_entropy(model(x.to(device)), torch.as_tensor(y).to(device), reduction="sum") / batch
            loss.backward()
            loss_sum += loss.item()
        optimizer.step()
        step += 1
        loss_value = loss_sum
    return step, loss_value


def run_finetune(cfg: FinetuneConfig, run_dir: str | Path, backbone: dict, device, *,
                 stop_after_epoch: int | None = None) -> dict:
    """Fine-tune `backbone` per `cfg.finetune` in `run_dir` (resuming from its last epoch).

    Returns top1, top5 (%), train_samples, epochs, steps, the effective batch and lr, and the
    number of BN re-estimation batches. `stop_after_epoch` ends after checkpointing that epoch, as
    a preemption would (tests); the result then has only the progress keys.
    """
    if cfg.task != "finetune":
        raise ConfigError(f"task: run_finetune runs finetune tasks, got {cfg.task!r}")
    f = cfg.finetune
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    t_start = time.time()

    train_set, test_set, classes = labelled_subset(cfg)
    augmented = SeededTransformed(train_set, _train_transform(cfg), seed=cfg.train.seed)
    n = len(train_set)
    batch = min(f.batch_size, n)
    micro = min(f.micro_batch_size, batch)
    lr = f.lr * batch / f.batch_size  # linear scaling when the subset caps the batch
    steps_per_epoch = schedules.steps_per_epoch(n, batch)
    total_steps = schedules.total_steps(f.epochs, steps_per_epoch)

    torch.manual_seed(cfg.train.seed)  # the head's initialisation
    encoder = resnet(cfg.model.arch, width=cfg.model.width, small_stem=cfg.model.small_stem)
    encoder.load_state_dict(backbone, strict=True)
    model = Classifier(encoder, classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=f.sgd_momentum, weight_decay=f.weight_decay)
    step = ckpt.resume(run_dir, model, optimizer, rank=0, world_size=1)
    if step % steps_per_epoch:
        raise ckpt.CheckpointError(f"{run_dir}: checkpoint at step {step} is not at an epoch end "
                                   f"({steps_per_epoch} steps per epoch): remove the run directory")
    start_epoch = step // steps_per_epoch

    loss_value = math.nan
    with MetricsLog(RunDir(run_dir).metrics) as metrics:
        for epoch in range(start_epoch, f.epochs):
            step, loss_value = _train_epoch(model, optimizer, augmented, cfg, device, epoch, step, lr=lr,
                                            total_steps=total_steps, batch=batch, micro=micro)
            check_finite(loss_value, f"fine-tuning loss is {loss_value} in epoch {epoch}: lower finetune.lr")
            ckpt.save(run_dir, model, optimizer, step, rank=0, world_size=1)
            metrics.write({"epoch": epoch + 1, "step": step, "loss": loss_value,
                           "lr": optimizer.param_groups[0]["lr"], "time": time.time()})
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < f.epochs:
                return {"stopped_at_epoch": epoch + 1, "steps": step}

    def bn_batches():
        # Fresh seeded passes over the training subset (epoch indices after training's), as
        # many as the requested batches need: a 10-image subset gets new crops on every pass.
        for p in itertools.count():
            augmented.set_epoch(f.epochs + p)
            chunks = [c for s in _epoch_chunks(n, batch, micro, cfg.train.seed, f.epochs + p) for c in s]
            for x, _ in _loader(augmented, chunks, cfg, device):
                yield x.to(device)

    used = reestimate_bn(model, bn_batches(), f.bn_reestimate_batches) if f.bn_reestimate_batches > 0 else 0
    top1, top5 = evaluate(model, test_set, eval_transform_for(cfg), cfg, device)
    return {"top1": top1, "top5": top5, "train_samples": n, "test_samples": len(test_set), "percent": f.percent,
            "epochs": f.epochs, "steps": step, "batch_size": batch, "micro_batch_size": micro, "lr": lr,
            "final_loss": loss_value, "bn_reestimate_batches": used, "finetune_wall_s": time.time() - t_start,
            "device": str(device)}
