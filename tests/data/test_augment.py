"""Tests for repro/data/augment.py: pipelines (SPEC §3, §4), seeded views, resumable sampler."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from repro.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResumableSampler,
    TwoViewDataset,
    blur_kernel_size,
    eval_transform,
    probe_train_transform,
    two_view_transforms,
)
from repro.core.schedules import steps_per_epoch
from repro.data.datasets import synthetic


def _flatten(compose: v2.Compose) -> list:
    ops = []
    for op in compose.transforms:
        ops.extend(op.transforms if isinstance(op, v2.RandomApply) else [op])
    return ops


def _probabilities(compose: v2.Compose) -> dict[str, float]:
    """Application probability of each augmentation, by class name."""
    found = {}
    for op in compose.transforms:
        if isinstance(op, v2.RandomApply):
            found[type(op.transforms[0]).__name__] = op.p
        elif hasattr(op, "p"):
            found[type(op).__name__] = op.p
    return found


def _two_view_dataset(seed: int = 0, num_samples: int = 8, image_size: int = 16):
    base = synthetic(num_samples, image_size=20, num_classes=3, seed=5)
    return TwoViewDataset(base, *two_view_transforms(image_size), seed=seed)


@pytest.mark.parametrize("image_size, expected", [(224, 23), (96, 9), (32, 3), (16, 3), (40, 5)])
def test_blur_kernel_size_is_odd_ten_percent(image_size, expected):
    assert blur_kernel_size(image_size) == expected


def test_two_view_pipelines_follow_reference_probabilities():
    transform1, transform2 = two_view_transforms(96)
    # FIDELITY table (SPEC §3): blur 1.0 / 0.1, solarize 0.0 / 0.2, jitter 0.8, grayscale 0.2.
    assert _probabilities(transform1) == {"ColorJitter": 0.8, "GaussianBlur": 1.0,
                                          "RandomGrayscale": 0.2, "RandomHorizontalFlip": 0.5,
                                          "RandomSolarize": 0.0}
    assert _probabilities(transform2) == {"ColorJitter": 0.8, "GaussianBlur": 0.1,
                                          "RandomGrayscale": 0.2, "RandomHorizontalFlip": 0.5,
                                          "RandomSolarize": 0.2}
    ops = {type(op).__name__: op for op in _flatten(transform2)}
    assert ops["RandomSolarize"].threshold == 128
    assert ops["GaussianBlur"].kernel_size == (9, 9)
    assert ops["GaussianBlur"].sigma == [0.1, 2.0]
    assert ops["RandomResizedCrop"].scale == (0.08, 1.0)
    jitter = ops["ColorJitter"]
    assert (jitter.brightness, jitter.contrast) == ((0.6, 1.4), (0.6, 1.4))
    assert (jitter.saturation, jitter.hue) == ((0.8, 1.2), (-0.1, 0.1))
    assert ops["Normalize"].mean == list(IMAGENET_MEAN)


def test_digits_options_remove_flip_and_set_crop_scale():
    for transform in two_view_transforms(16, crop_scale=(0.25, 1.0), hflip=False):
        names = [type(op).__name__ for op in _flatten(transform)]
        assert "RandomHorizontalFlip" not in names
        assert names.index("RandomGrayscale") < names.index("RandomSolarize")
        assert _flatten(transform)[1].scale == (0.25, 1.0)


def test_views_shapes_dtypes_and_pil_input_agrees_with_tensor():
    image = synthetic(1, image_size=24, num_classes=2, seed=0)[0][0]
    for transform in two_view_transforms(16):
        torch.manual_seed(0)
        view = transform(image)
        torch.manual_seed(0)
        view_from_pil = transform(v2.functional.to_pil_image(image))
        assert type(view) is torch.Tensor  # Plain tensor, not a tv_tensors.Image.
        assert view.shape == (3, 16, 16) and view.dtype == torch.float32
        torch.testing.assert_close(view, view_from_pil, rtol=0, atol=0)


def test_same_seed_epoch_index_gives_identical_views_and_leaves_rng_alone():
    dataset, twin = _two_view_dataset(), _two_view_dataset()
    dataset.set_epoch(3)
    twin.set_epoch(3)
    rng_before = torch.get_rng_state()
    random.seed(1)
    view1, view2 = dataset[5]
    random.seed(2)  # Python's RNG must play no part.
    twin_view1, twin_view2 = twin[5]
    assert torch.equal(view1, twin_view1) and torch.equal(view2, twin_view2)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert view1.shape == view2.shape == (3, 16, 16)
    assert view1.dtype == view2.dtype == torch.float32


def test_views_change_with_epoch_seed_and_differ_from_each_other():
    dataset = _two_view_dataset()
    view1, view2 = dataset[2]
    assert not torch.equal(view1, view2)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2][0], view1)
    assert not torch.equal(_two_view_dataset(seed=1)[2][0], view1)


def test_batches_are_identical_for_any_number_of_workers():
    dataset = _two_view_dataset(num_samples=12)
    dataset.set_epoch(2)
    sampler = ResumableSampler(len(dataset), rank=0, world_size=1, seed=0, per_rank_batch_size=4)
    sampler.set_epoch(2)

    def batches(num_workers):
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=num_workers)
        return [torch.cat(pair) for pair in loader]

    in_process = batches(0)
    assert len(in_process) == 3
    for batch, other in zip(in_process, batches(2), strict=True):
        assert torch.equal(batch, other)


def test_eval_transform_is_exact_normalisation_at_native_size():
    image = synthetic(1, image_size=16, num_classes=2, seed=0)[0][0]
    expected = (image.double() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    # float32 arithmetic inside the transform: compare at float32 tolerance.
    torch.testing.assert_close(eval_transform(16)(image), expected.float())


def test_eval_transform_imagenet_resize_and_center_crop():
    image = torch.zeros(3, 300, 400, dtype=torch.uint8)
    image[:, :, 200:] = 255  # Right half white: the 224 centre crop of the 256x341 resize.
    transform = eval_transform(224, resize_to=256, normalize_mean=(0, 0, 0),
                               normalize_std=(1, 1, 1))
    out = transform(image)
    assert out.shape == (3, 224, 224)
    # The centre crop spans columns 58..281 of 341; the edge at 170.5 falls at crop column 112.
    assert out[:, :, :110].max() == 0 and out[:, :, 115:].min() == 1


def test_probe_train_transform_shape_and_randomness():
    image = synthetic(1, image_size=32, num_classes=2, seed=0)[0][0]
    transform = probe_train_transform(16, hflip=False)
    assert "RandomHorizontalFlip" not in [type(op).__name__ for op in transform.transforms]
    torch.manual_seed(0)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 16, 16) and first.dtype == torch.float32
    assert not torch.equal(first, second)


def test_steps_per_epoch_floor_division():
    assert steps_per_epoch(105_000, 2048) == 51  # STL10 train+unlabeled, 64 GPUs x 32 (SPEC §4).
    assert steps_per_epoch(1797, 128) == 14  # digits (SPEC §7): 1000 steps ~ 71 epochs.
    with pytest.raises(ValueError, match="no full batch"):
        steps_per_epoch(100, 128)


def _rank_batches(sampler: ResumableSampler) -> list[list[int]]:
    indices = list(sampler)
    assert len(indices) == len(sampler)
    size = sampler.per_rank_batch_size
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def test_sampler_shards_are_disjoint_and_cover_the_used_epoch():
    samplers = [ResumableSampler(50, rank=rank, world_size=3, seed=7, per_rank_batch_size=4)
                for rank in range(3)]
    shards = [list(sampler) for sampler in samplers]
    assert [len(shard) for shard in shards] == [16, 16, 16]  # 50 // 12 = 4 steps of 3 x 4.
    assert len(set().union(*shards)) == 48  # Disjoint: 48 distinct of 50, the tail dropped.
    unsharded = ResumableSampler(50, rank=0, world_size=1, seed=7, per_rank_batch_size=12)
    # Global batch k is the same set of images whatever the number of ranks.
    for step, global_batch in enumerate(_rank_batches(unsharded)):
        per_rank = [_rank_batches(sampler)[step] for sampler in samplers]
        assert set(global_batch) == set(sum(per_rank, []))


def test_sampler_epochs_differ_and_repeat():
    sampler = ResumableSampler(40, rank=0, world_size=1, seed=0, per_rank_batch_size=8)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(40))
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


@settings(max_examples=60, deadline=None)
@given(dataset_len=st.integers(8, 200), world_size=st.integers(1, 4),
       per_rank_batch_size=st.integers(1, 8), epoch=st.integers(0, 5), data=st.data())
def test_resume_gives_the_tail_of_the_uninterrupted_epoch(dataset_len, world_size,
                                                          per_rank_batch_size, epoch, data):
    if dataset_len < world_size * per_rank_batch_size:
        return
    rank = data.draw(st.integers(0, world_size - 1))
    kwargs = dict(rank=rank, world_size=world_size, seed=3, per_rank_batch_size=per_rank_batch_size)
    uninterrupted = ResumableSampler(dataset_len, **kwargs)
    uninterrupted.set_epoch(epoch)
    full = _rank_batches(uninterrupted)
    assert len(full) == uninterrupted.num_batches
    start_batch = data.draw(st.integers(0, len(full)))
    resumed = ResumableSampler(dataset_len, **kwargs)
    resumed.set_epoch(epoch, start_batch=start_batch)
    assert _rank_batches(resumed) == full[start_batch:]


def test_sampler_rejects_bad_start_batch_and_rank():
    sampler = ResumableSampler(20, rank=0, world_size=2, seed=0, per_rank_batch_size=5)
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(0, start_batch=3)
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(20, rank=2, world_size=2, seed=0, per_rank_batch_size=5)


def test_mocov2_views_share_one_pipeline_and_differ_by_randomness():
    from repro.data.augment import AUGMENTATIONS, mocov2_transforms

    t1, t2 = mocov2_transforms(16, hflip=False)
    assert t1 is t2 and AUGMENTATIONS["mocov2"] is mocov2_transforms
    image = (torch.arange(3 * 16 * 16) % 251).to(torch.uint8).reshape(3, 16, 16)
    torch.manual_seed(0)
    a = t1(image)
    torch.manual_seed(1)
    b = t1(image)
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32 and not torch.equal(a, b)
