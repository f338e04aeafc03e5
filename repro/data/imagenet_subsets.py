"""ImageNet 1% / 10% label subsets for semi-supervised fine-tuning (SPEC section 4, Table 12).

FIDELITY: the paper fine-tunes on the SimCLR splits; `imagenet_subsets/` holds them unmodified
(google-research/simclr, Apache-2.0; see its README): one training file name per line, e.g.
`n01440764_10026.JPEG`, the class (WordNet id) being the part before the underscore.

SPEC section 6: other benchmarks make users rewrite these lists into label files by hand, so
`subset_samples` maps them onto an ImageNet training folder directly and checks every file.
`deterministic_subset` emulates the 1% / 10% protocol on the small built-in datasets of the local
and smoke profiles.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

# Line counts of the published files (SPEC section 4): a truncated copy fails loudly.
EXPECTED_COUNTS = {1: 12_811, 10: 128_116}


@functools.lru_cache(maxsize=None)
def _read_subset(percent: int) -> tuple[str, ...]:
    text = (
        resources.files("repro.data")
        .joinpath("imagenet_subsets", f"{percent}percent.txt")
        .read_text(encoding="ascii")
    )
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != EXPECTED_COUNTS[percent]:
        raise ValueError(
            f"imagenet_subsets/{percent}percent.txt has {len(names)} names, expected "
            f"{EXPECTED_COUNTS[percent]}: the packaged copy is damaged, reinstall the package"
        )
    return names


def load_subset(percent: int) -> list[str]:
    """The SimCLR ImageNet subset `percent` (1 or 10) as a list of training file names."""
    if percent not in EXPECTED_COUNTS:
        raise ValueError(f"percent must be 1 or 10 (the SimCLR subsets), got {percent!r}")
    return list(_read_subset(percent))


def wnid_of(file_name: str) -> str:
    """The class of an ImageNet training file name: `n01440764_10026.JPEG` -> `n01440764`."""
    return file_name.split("_", 1)[0]


def subset_samples(
    imagenet_train_root: str | os.PathLike, percent: int
) -> list[tuple[str, int]]:
    """(path, class_index) for every image of the `percent`% subset under an ImageFolder root.

    `imagenet_train_root` is the ImageNet training folder in ImageFolder layout,
    `root/<wnid>/<wnid>_<number>.JPEG`. Class indices follow torchvision's ImageFolder (the sorted
    names of the root's class folders), so a validation ImageFolder over the same 1000 classes
    gets the same indices. Samples come in ImageFolder's order (by class, then file name).
    Raises ValueError, saying how many are missing and showing some, if any file is absent.
    """
    root = Path(imagenet_train_root)
    fix = (
        "point imagenet_train_root at the ImageNet training folder in ImageFolder layout "
        "(root/<wnid>/<wnid>_<number>.JPEG, e.g. the extracted ILSVRC2012_img_train)"
    )
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory: {fix}")
    # Same rule as torchvision.datasets.folder.find_classes: every sub-folder is a class, sorted.
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    class_to_idx = {wnid: index for index, wnid in enumerate(classes)}

    names = load_subset(percent)
    by_class: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_class[wnid_of(name)].append(name)

    samples: list[tuple[str, int]] = []
    missing: list[str] = []
    for wnid in sorted(by_class):
        class_dir = root / wnid
        # One directory listing per class instead of one stat per file: far fewer metadata
        # calls on the network filesystems ImageNet usually lives on.
        present = set(os.listdir(class_dir)) if class_dir.is_dir() else set()
        for name in sorted(by_class[wnid]):
            if wnid in class_to_idx and name in present:
                samples.append((str(class_dir / name), class_to_idx[wnid]))
            else:
                missing.append(str(class_dir / name))
    if missing:
        shown = ", ".join(missing[:5])
        raise ValueError(
            f"{len(missing)} of {len(names)} files of the ImageNet {percent}% subset are missing "
            f"under {root} (first: {shown}): {fix}"
        )
    return samples


def _rank_key(seed: int, index: int) -> bytes:
    # A hash rather than a random generator: the order is fixed by (seed, index) alone, identical
    # across runs, machines and library versions.
    return hashlib.sha256(f"{seed}:{index}".encode()).digest()


def deterministic_subset(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A class-balanced subset of the indices of `labels`, about `fraction` of each class.

    DEVIATION: stands in for the SimCLR 1% / 10% lists on small built-in datasets (local and
    smoke profiles of Table 12). Each class keeps round(fraction * its size) samples, at least 1.
    Each class's indices are ranked by a hash of (seed, index) and the first ones are kept, so
    the result is stable across runs and, for one seed, a smaller fraction's subset lies inside a
    larger one's (as the SimCLR 1% list lies inside the 10% list). Returns sorted indices.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if len(labels) == 0:
        raise ValueError("labels is empty")
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    chosen: list[int] = []
    for indices in by_class.values():
        keep = max(1, math.floor(fraction * len(indices) + 0.5))  # round half up, not to even
        chosen.extend(sorted(indices, key=lambda i: _rank_key(seed, i))[:keep])
    return sorted(chosen)
