"""Tests for repro/data/datasets.py: built-in data (SPEC §7) and the STL10 / ImageNet readers."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from repro.data.augment import IMAGENET_MEAN, IMAGENET_STD
from repro.data.datasets import (
    BUILDERS,
    DIGITS_MEAN,
    DIGITS_STD,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
    DatasetNotFound,
    build_dataset,
    dataset_stats,
    digits,
    imagenet,
    num_classes,
    stl10,
    synthetic,
)


def test_digits_size_classes_and_values():
    dataset = digits(16)
    image, label = dataset[0]
    assert len(dataset) == 1797
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert isinstance(label, int)
    assert torch.bincount(dataset.labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179,
                                                       174, 180]
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    # At the native 8 px there is no resampling: values are exactly 0..16 scaled to 0..255.
    native = digits(8).images[:, 0]
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    assert torch.equal(native, torch.from_numpy(expected))


def test_digits_holdout_is_stratified_and_disjoint():
    train, test = digits(16, "train"), digits(16, "test")
    assert (len(train), len(test)) == (1442, 355)
    # Every fifth image of each class: floor(class count / 5) test images per class.
    assert torch.bincount(test.labels).tolist() == [35, 36, 35, 36, 36, 36, 36, 35, 34, 36]
    everything = torch.cat([train.images, test.images]).flatten(1)
    assert torch.unique(everything, dim=0).shape[0] == torch.unique(
        digits(16).images.flatten(1), dim=0).shape[0]
    with pytest.raises(ValueError, match="split"):
        digits(16, "val")


def test_digits_stats_match_data():
    pixels = digits(16).images.double() / 255
    torch.testing.assert_close(pixels.mean(dim=(0, 2, 3)), torch.tensor(DIGITS_MEAN).double(),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(pixels.std(dim=(0, 2, 3)), torch.tensor(DIGITS_STD).double(),
                               atol=1e-4, rtol=0)


def test_synthetic_is_deterministic_with_shared_classes_and_nominal_stats():
    first, again = synthetic(64, 12, 10, seed=0), synthetic(64, 12, 10, seed=0)
    other = synthetic(64, 12, 10, seed=1)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (64, 3, 12, 12) and first.images.dtype == torch.uint8
    assert 0 <= first.labels.min() and first.labels.max() < 10
    # Same class -> same colour across seeds: per-image means agree to the noise level.
    label = int(first.labels[0])
    same = other.images[other.labels == label].double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(first.images[0].double().mean(dim=(1, 2)), same, atol=6, rtol=0)
    pixels = synthetic(2000, 8, 10, seed=0).images.double() / 255
    torch.testing.assert_close(pixels.mean(dim=(0, 2, 3)), torch.tensor(SYNTHETIC_MEAN).double(),
                               atol=0.01, rtol=0)
    torch.testing.assert_close(pixels.std(dim=(0, 2, 3)), torch.tensor(SYNTHETIC_STD).double(),
                               atol=0.01, rtol=0)


def _write_stl10(root, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny STL10 binary files: images as N x 3 x 96 x 96 uint8, each channel column-major."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for prefix, count in counts.items():
        images = rng.integers(0, 256, (count, 3, 96, 96), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)  # 0-based; files are 1-based.
        with open(folder / f"{prefix}_X.bin", "wb") as f:
            for image in images:
                for channel in image:
                    f.write(channel.tobytes(order="F"))
        if prefix != "unlabeled":
            (labels + 1).tofile(folder / f"{prefix}_y.bin")
        written[prefix] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(f"class{k}" for k in range(10)) + "\n")
    (folder / "fold_indices.txt").write_text("0 1\n" * 10)
    return written


def test_stl10_binary_round_trip(tmp_path):
    written = _write_stl10(tmp_path, {"train": 3, "test": 2, "unlabeled": 2})
    for split, parts in [("train", ["train"]), ("test", ["test"]),
                         ("train+unlabeled", ["train", "unlabeled"])]:
        dataset = stl10(tmp_path, split)
        images = np.concatenate([written[part][0] for part in parts])
        labels = [int(v) for v in written[parts[0]][1]] + [-1] * (len(images) - len(
            written[parts[0]][1]))
        assert len(dataset) == len(images)
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.dtype == torch.uint8 and image.shape == (3, 96, 96)
            assert image.is_contiguous()
            assert torch.equal(image, torch.from_numpy(images[index]))
            assert label == labels[index]
    assert stl10(tmp_path, "test").classes[3] == "class3"


def test_stl10_missing_root_names_root_and_how_to_get_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFound) as caught:
        stl10(missing, "train+unlabeled")
    message = str(caught.value)
    assert str(missing) in message and "stl10_binary.tar.gz" in message
    assert "train_X.bin" in message and "unlabeled_X.bin" in message
    assert isinstance(caught.value, ValueError)


def test_stl10_truncated_or_partial_files(tmp_path):
    _write_stl10(tmp_path, {"train": 1})
    with pytest.raises(DatasetNotFound, match="missing test_X.bin, test_y.bin"):
        stl10(tmp_path, "test")
    with open(tmp_path / "stl10_binary" / "train_X.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DatasetNotFound, match="truncated"):
        stl10(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        stl10(tmp_path, "unlabeled")


def test_imagenet_folder_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    expected = {}
    for class_index, wnid in enumerate(["n01440764", "n01443537"]):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for image_index in range(2):
            image = torch.randint(0, 256, (3, 5 + image_index, 7), dtype=torch.uint8,
                                  generator=generator)
            path = tmp_path / "val" / wnid / f"img{image_index}.png"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
            expected[str(path)] = (image, class_index)
    gray = torch.full((1, 4, 4), 9, dtype=torch.uint8)  # Decoded to 3 equal RGB channels.
    Image.fromarray(gray[0].numpy()).save(tmp_path / "val" / "n01443537" / "img9.png")
    expected[str(tmp_path / "val" / "n01443537" / "img9.png")] = (gray.expand(3, -1, -1), 1)

    dataset = imagenet(tmp_path, "val")
    assert dataset.classes == ["n01440764", "n01443537"]
    assert len(dataset) == 5
    for index, (path, _) in enumerate(dataset.samples):
        image, label = dataset[index]
        assert image.dtype == torch.uint8
        assert torch.equal(image, expected[path][0]) and label == expected[path][1]


def test_imagenet_missing_or_empty_split(tmp_path):
    with pytest.raises(DatasetNotFound) as caught:
        imagenet(tmp_path / "imagenet", "train")
    assert str(tmp_path / "imagenet") in str(caught.value)
    assert "ILSVRC2012_img_train.tar" in str(caught.value)
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(DatasetNotFound, match="empty"):
        imagenet(tmp_path / "imagenet", "val")


def test_registry_builds_and_describes_every_dataset(tmp_path):
    assert sorted(BUILDERS) == ["digits", "imagenet", "mnist5k", "stl10", "synthetic"]
    train = build_dataset("synthetic", None, "train", 8)
    test = build_dataset("synthetic", None, "test", 8)
    assert (len(train), len(test)) == (512, 256) and train[0][0].shape == (3, 8, 8)
    assert len(build_dataset("digits", None, None, 16)) == 1797
    with pytest.raises(DatasetNotFound):
        build_dataset("stl10", tmp_path, "train", 96)
    assert dataset_stats("stl10") == (IMAGENET_MEAN, IMAGENET_STD)
    assert dataset_stats("digits") == (DIGITS_MEAN, DIGITS_STD)
    assert [num_classes(name) for name in ("digits", "mnist5k", "synthetic", "stl10", "imagenet")] == [10, 10, 10, 10, 1000]
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        dataset_stats("cifar10")


def test_the_memory_mapped_stl10_reader_gives_torchvisions_images_labels_and_order(tmp_path):
    import pickle

    import torchvision

    from repro.data.ondisk import write_stl10

    write_stl10(tmp_path, train=5, unlabeled=3, test=4)

    class TorchvisionSTL10(torchvision.datasets.STL10):
        def _check_integrity(self):  # md5s of the real archive; these files are generated
            return True

    for split in ("train", "test", "train+unlabeled"):
        ours, theirs = stl10(tmp_path, split), TorchvisionSTL10(str(tmp_path), split=split)
        assert len(ours) == len(theirs)
        for i in range(len(ours)):
            assert torch.equal(ours[i][0], torch.from_numpy(theirs.data[i])) and ours[i][1] == int(theirs.labels[i])
    # What a spawned DataLoader worker receives: paths and labels, not the images; it reopens the maps.
    ours = stl10(tmp_path, "train+unlabeled")
    ours[0]
    blob = pickle.dumps(ours)
    assert len(blob) < 3 * 96 * 96  # smaller than one image
    assert torch.equal(pickle.loads(blob)[7][0], ours[7][0])


def test_mnist5k_is_the_5000_real_digits_with_a_stratified_holdout_and_its_stats():
    from repro.data.datasets import MNIST5K_MEAN, MNIST5K_STD, mnist5k

    full = mnist5k()
    assert full.images.shape == (5000, 3, 28, 28) and full.images.dtype == torch.uint8
    assert torch.bincount(full.labels).tolist() == [500] * 10
    assert torch.equal(full.images[:, 0], full.images[:, 2])  # grey, copied to 3 channels
    train, test = mnist5k(split="train"), mnist5k(split="test")
    assert (len(train), len(test)) == (4000, 1000) and torch.bincount(test.labels).tolist() == [100] * 10
    assert torch.equal(torch.cat([train.images, test.images]).sum(0), full.images.sum(0))  # a partition
    pixels = full.images[:, :1].double() / 255
    assert abs(pixels.mean().item() - MNIST5K_MEAN[0]) < 1e-4 and abs(pixels.std().item() - MNIST5K_STD[0]) < 1e-4
    assert mnist5k(16).images.shape == (5000, 3, 16, 16)


def test_one_registry_answers_every_dataset_question():
    from repro.data.datasets import DATASETS, dataset_info, split_for
    from repro.launch.cost import pretrain_images

    assert sorted(DATASETS) == sorted(BUILDERS) and all(BUILDERS[n] is d.build for n, d in DATASETS.items())
    for name, info in DATASETS.items():
        assert info.name == name and dataset_info(name) is info
        assert dataset_stats(name) == (info.mean, info.std) and num_classes(name) == info.classes
        assert split_for(name, "pretrain") == info.splits[0] and split_for(name, "probe_test") == info.splits[2]
    # the published split sizes price a paper-scale run (SPEC §4); built-in data is not priced
    assert pretrain_images("stl10") == 105_000 == sum(DATASETS["stl10"].images[s] for s in ("train", "unlabeled"))
    assert pretrain_images("imagenet") == 1_281_167 and num_classes("imagenet") == 1000
    assert pretrain_images("digits") is None and pretrain_images("no-such-data") is None
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_info("no-such-data")
