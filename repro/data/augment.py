"""Augmentations (SPEC §3, §4), a seeded two-view dataset and a resumable distributed sampler.

Image convention: every dataset in `repro.data.datasets` yields RGB images as uint8 tensors of
shape 3 x H x W (values 0..255). The transforms here also accept PIL images (`v2.ToImage` turns
them into the same tensors first), and always return float32 3 x size x size tensors, normalised.
The colour operations run on uint8, like the reference code's PIL pipeline, and the conversion to
float happens once, just before normalisation.

Randomness: torchvision's v2 transforms draw every random number from torch's global CPU
generator (none from Python's `random` module, unlike the reference code's blur). `TwoViewDataset`
seeds that generator per item from (seed, epoch, index) inside `torch.random.fork_rng`, so an
item's views depend on nothing else: not the DataLoader's workers, not the caller's RNG state.
"""

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from ..core.schedules import steps_per_epoch

# FIDELITY: the reference code normalises with ImageNet's statistics for every dataset it runs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[torch.Tensor], torch.Tensor]


def blur_kernel_size(image_size: int, fraction: float = 0.1) -> int:
    """The odd Gaussian-blur kernel size nearest to `fraction * image_size`, at least 3.

    224 px -> 23 (BYOL's kernel), 96 px -> 9, 32 px -> 3, 16 px -> 3.
    """
    # DEVIATION: the reference code blurs with PIL's ImageFilter.GaussianBlur(radius=sigma), whose
    # support grows with sigma; torchvision needs a fixed kernel. BYOL fixes it at about 10% of the
    # image (23 at 224 px, i.e. +-11 px, more than 5 sigma for sigma <= 2: the same blur as PIL's).
    # The paper states no kernel for STL10 (96 px) or smaller images; 10% keeps BYOL's proportion,
    # which truncates large sigmas at small sizes (at 16 px the 3x3 kernel is +-1 px, so sigma 2
    # is close to a 3x3 box filter).
    nearest_odd = 2 * math.floor(fraction * image_size / 2) + 1
    return max(3, nearest_odd)


def _to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> list:
    # One uint8 -> float conversion (ToTensor's /255) and the normalisation, then drop the
    # tv_tensors.Image wrapper so that collated batches are plain tensors.
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor()]


def _byol_view(image_size: int, *, crop_scale: tuple[float, float], hflip: bool, blur_p: float,
               blur_kernel: int, solarize_p: float, mean: Sequence[float],
               std: Sequence[float]) -> v2.Compose:
    ops = [
        v2.ToImage(),
        # FIDELITY: crop, colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, blur sigma U[0.1, 2.0],
        # grayscale p 0.2, flip, then solarize, in this order (reference byol_transform, SPEC §3).
        v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=blur_p),
        v2.RandomGrayscale(p=0.2),
    ]
    if hflip:  # Off for digits: a mirrored digit is another glyph (SPEC §7).
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    # FIDELITY: PIL's ImageOps.solarize inverts pixels >= 128; on uint8 tensors v2 does the same.
    ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops + _to_normalized_float(mean, std))


def two_view_transforms(
    image_size: int,
    *,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    blur_kernel_fraction: float = 0.1,
    normalize_mean: Sequence[float] = IMAGENET_MEAN,
    normalize_std: Sequence[float] = IMAGENET_STD,
) -> tuple[v2.Compose, v2.Compose]:
    """The two asymmetric BYOL pipelines (SPEC §3; paper Section 4 follows BYOL's augmentations).

    Args:
        image_size: side of the square output crops (224 ImageNet, 96 STL10, 16 digits).
        crop_scale: RandomResizedCrop's area range; (0.25, 1) for 16-px digits (SPEC §7).
        hflip: random horizontal flip with p 0.5; False for digits.
        blur_kernel_fraction: blur kernel size as a fraction of image_size, see blur_kernel_size.
        normalize_mean, normalize_std: per-channel statistics in [0, 1] units
            (`datasets.dataset_stats(name)`).

    Returns:
        (transform1, transform2): uint8 3xHxW tensor (or PIL image) -> float32 3 x size x size.
    """
    shared = dict(crop_scale=tuple(crop_scale), hflip=hflip,
                  blur_kernel=blur_kernel_size(image_size, blur_kernel_fraction),
                  mean=normalize_mean, std=normalize_std)
    # FIDELITY: blur p 1.0 / 0.1 and solarize p 0.0 / 0.2 for view 1 / view 2 (reference code).
    transform1 = _byol_view(image_size, blur_p=1.0, solarize_p=0.0, **shared)
    transform2 = _byol_view(image_size, blur_p=0.1, solarize_p=0.2, **shared)
    return transform1, transform2


def mocov2_transforms(
    image_size: int,
    *,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    hflip: bool = True,
    blur_kernel_fraction: float = 0.1,
    normalize_mean: Sequence[float] = IMAGENET_MEAN,
    normalize_std: Sequence[float] = IMAGENET_STD,
) -> tuple[v2.Compose, v2.Compose]:
    """MoCo v2's augmentation (Table 3), the same pipeline for both views.

    FIDELITY: MoCo v2 (Chen et al. 2020): RandomResizedCrop scale (0.2, 1), colour jitter
    (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, blur sigma U[0.1, 2.0] with p 0.5,
    flip; no solarize.
    """
    ops = [
        v2.ToImage(),
        v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size, blur_kernel_fraction), sigma=(0.1, 2.0))], p=0.5),
    ]
    if hflip:
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    view = v2.Compose(ops + _to_normalized_float(normalize_mean, normalize_std))
    return view, view


AUGMENTATIONS = {"byol": two_view_transforms, "mocov2": mocov2_transforms}


def eval_transform(
    image_size: int,
    resize_to: int | None = None,
    *,
    normalize_mean: Sequence[float] = IMAGENET_MEAN,
    normalize_std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Deterministic probe/test transform (SPEC §4): resize the short side, centre-crop, normalise.

    ImageNet: `eval_transform(224, resize_to=256)` (FIDELITY: reference Resize(256) +
    CenterCrop(224)). With resize_to None the short side is resized to image_size, which is the
    identity for images already of that size (STL10 at 96, digits at their built size).
    """
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_to or image_size, antialias=True),
        v2.CenterCrop(image_size),
        *_to_normalized_float(normalize_mean, normalize_std),
    ])


def probe_train_transform(
    image_size: int,
    *,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    normalize_mean: Sequence[float] = IMAGENET_MEAN,
    normalize_std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Linear-probe training transform (SPEC §4): RandomResizedCrop + horizontal flip, normalise.

    FIDELITY: the reference code's RandomResizedCrop(224) uses torchvision's default scale
    (0.08, 1), the default here.
    """
    ops = [v2.ToImage(), v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(ops + _to_normalized_float(normalize_mean, normalize_std))


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers, e.g. (seed, epoch, index).

    numpy's SeedSequence hashes the keys, so nearby keys give unrelated streams (seed + epoch
    would make seed 0 epoch 1 replay seed 1 epoch 0).
    """
    words = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class Transformed(Dataset):
    """(transform(image), label) of a dataset of (image, label): the probes' and fine-tuning's test sets."""

    def __init__(self, base: Dataset, transform: Transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image), label


class SeededTransformed(Dataset):
    """(transform(image), label), with the global generator seeded from (seed, epoch, index)
    as in `TwoViewDataset`: an item's random crop depends on nothing else (workers, resume).
    Fine-tuning's training set."""

    def __init__(self, base: Dataset, transform: Transform, seed: int):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, int(i)))
            image, label = self.base[i]
            return self.transform(image), label


class TwoViewDataset(Dataset):
    """Wraps a dataset of (image, label); yields (view1, view2) (SPEC §3; paper Section 3.4).

    Each item's views are a pure function of (seed, epoch, index): the global torch CPU generator
    is seeded from `derive_seed(seed, epoch, index)` inside `fork_rng`, so the caller's RNG state is
    untouched and any number of DataLoader workers gives bitwise the same batches.

    Call `set_epoch(epoch)` before creating each epoch's DataLoader iterator. Workers copy the
    dataset when the iterator is created, so with `persistent_workers=True` they would keep the
    old epoch: do not combine the two.
    """

    def __init__(self, base: Dataset, transform1: Transform, transform2: Transform, *,
                 seed: int) -> None:
        self.base = base
        self.transform1 = transform1
        self.transform2 = transform2
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # devices=[]: only the CPU generator is forked (the v2 transforms use nothing else), and
        # default_generator.manual_seed, unlike torch.manual_seed, leaves CUDA generators alone.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, self.epoch, int(index)))
            image, _ = self.base[index]
            return self.transform1(image), self.transform2(image)


class ResumableSampler(Sampler[int]):
    """Per-epoch seeded permutation, sharded across devices, that can resume mid-epoch.

    Like DistributedSampler, device d (of world_size x devices) takes positions d, d + D, ... of
    the epoch's permutation (D devices in all); so global batch k (all devices' k-th batches
    together) is exactly the permutation slice [k * B, (k + 1) * B) with
    B = D * per_rank_batch_size, whatever the process and device counts. The tail that does not
    fill a global batch is dropped (drop_last, the training loop's only use), so every process
    yields `steps_per_epoch(dataset_len, B)` full batches.

    A process holds `devices` emulated devices (`repro.core.devices`): process p's devices are
    d = p * devices + k, and its batch of `devices * per_rank_batch_size` images is in
    device-minor order (device k's j-th image at position j * devices + k), the layout its BN
    layers split for free. So device k of process p sees exactly the images that rank
    p * devices + k of a one-device run would.

    `set_epoch(epoch, start_batch=k)` skips each process's first k batches: a run checkpointed
    after k steps of an epoch resumes with exactly the batches the uninterrupted run would have
    seen next. Use with `DataLoader(dataset, batch_size=process_batch_size, sampler=sampler)`.
    """

    def __init__(self, dataset_len: int, *, rank: int, world_size: int, seed: int,
                 per_rank_batch_size: int, devices: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.dataset_len = dataset_len
        self.rank = rank
        self.world_size = world_size
        self.devices = devices
        self.seed = seed
        self.per_rank_batch_size = per_rank_batch_size
        self.process_batch_size = per_rank_batch_size * devices
        self.epoch = 0
        self.start_batch = 0
        self.num_batches = steps_per_epoch(dataset_len, world_size * self.process_batch_size)
        self._rank_len = self.num_batches * self.process_batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation; skip this rank's first `start_batch` batches."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.num_batches}]")
        self.epoch = epoch
        self.start_batch = start_batch

    def _rank_indices(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        permutation = torch.randperm(self.dataset_len, generator=generator)
        used_len = self._rank_len * self.world_size  # at most dataset_len: full global batches only
        # Row m of this view holds positions m * D .. m * D + D - 1, one per device: process p
        # takes its devices' columns, row after row (device-minor order).
        rows = permutation[:used_len].view(-1, self.world_size, self.devices)
        return rows[:, self.rank, :].reshape(-1)

    def __iter__(self) -> Iterator[int]:
        skipped = self.start_batch * self.process_batch_size
        return iter(self._rank_indices()[skipped:].tolist())

    def __len__(self) -> int:
        return max(0, self._rank_len - self.start_batch * self.process_batch_size)
