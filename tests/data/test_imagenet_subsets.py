"""Tests for repro/data/imagenet_subsets.py (SPEC section 4, Semi-supervised; section 6)."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.data import imagenet_subsets
from repro.data.imagenet_subsets import (
    deterministic_subset,
    load_subset,
    subset_samples,
    wnid_of,
)


@pytest.mark.parametrize(("percent", "count"), [(1, 12_811), (10, 128_116)])
def test_packaged_lists(percent, count):
    names = load_subset(percent)
    assert len(names) == count
    assert len(set(names)) == count
    assert len({wnid_of(n) for n in names}) == 1000
    assert all(n.endswith(".JPEG") and n.startswith("n") for n in names)


def test_one_percent_inside_ten_percent():
    assert set(load_subset(1)) <= set(load_subset(10))


def test_load_subset_rejects_other_percents():
    with pytest.raises(ValueError, match="1 or 10"):
        load_subset(5)


def test_load_subset_returns_a_fresh_list():
    load_subset(1).clear()
    assert len(load_subset(1)) == 12_811


def test_wnid_of():
    assert wnid_of("n01440764_10026.JPEG") == "n01440764"


FAKE_LIST = [
    "n02000000_7.JPEG",
    "n01000000_3.JPEG",
    "n01000000_1.JPEG",
    "n03000000_2.JPEG",
]


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_subsets, "load_subset", lambda percent: list(FAKE_LIST))
    root = tmp_path / "train"
    # n01500000 holds no subset image but is a class folder: it shifts the later indices, as it
    # would in torchvision's ImageFolder.
    for wnid in ("n01000000", "n01500000", "n02000000", "n03000000"):
        (root / wnid).mkdir(parents=True)
    for name in FAKE_LIST + ["n01000000_99.JPEG"]:  # plus an image outside the subset
        (root / wnid_of(name) / name).touch()
    (root / "README.txt").touch()  # a stray file is not a class
    return root


def test_subset_samples_maps_onto_imagefolder(fake_root):
    samples = subset_samples(fake_root, 1)
    assert samples == [
        (str(fake_root / "n01000000" / "n01000000_1.JPEG"), 0),
        (str(fake_root / "n01000000" / "n01000000_3.JPEG"), 0),
        (str(fake_root / "n02000000" / "n02000000_7.JPEG"), 2),
        (str(fake_root / "n03000000" / "n03000000_2.JPEG"), 3),
    ]


def test_subset_samples_matches_torchvision_imagefolder(fake_root):
    from torchvision.datasets.folder import find_classes

    _, class_to_idx = find_classes(str(fake_root))
    for path, index in subset_samples(fake_root, 1):
        assert class_to_idx[path.split("/")[-2]] == index


def test_subset_samples_reports_missing_files(fake_root):
    (fake_root / "n02000000" / "n02000000_7.JPEG").unlink()
    for path in (fake_root / "n03000000").iterdir():
        path.unlink()
    (fake_root / "n03000000").rmdir()
    with pytest.raises(ValueError) as info:
        subset_samples(fake_root, 10)
    message = str(info.value)
    assert "2 of 4 files" in message
    assert "n02000000_7.JPEG" in message and "n03000000_2.JPEG" in message
    assert "ImageFolder layout" in message


def test_subset_samples_rejects_a_missing_root(tmp_path):
    with pytest.raises(ValueError, match="not a directory.*ImageFolder"):
        subset_samples(tmp_path / "nowhere", 1)


LABELS = [i % 10 for i in range(1797)]  # the size of scikit-learn's digits


def test_deterministic_subset_balanced_and_stable():
    subset = deterministic_subset(LABELS, 0.1, seed=0)
    assert subset == deterministic_subset(LABELS, 0.1, seed=0)
    assert subset == sorted(set(subset))
    counts = Counter(LABELS[i] for i in subset)
    assert set(counts) == set(range(10))
    # 179 or 180 per class; round(17.9) = round(18.0) = 18
    assert set(counts.values()) == {18}
    assert deterministic_subset(LABELS, 0.1, seed=1) != subset


def test_deterministic_subset_pinned():
    # Pins the exact selection so a change of the ranking rule cannot pass unnoticed.
    assert deterministic_subset([0, 0, 0, 0, 1, 1, 1, 1], 0.5, seed=0) == [2, 3, 4, 7]


def test_deterministic_subset_keeps_one_per_class():
    labels = [0] * 50 + [1] * 3 + [2]
    subset = deterministic_subset(labels, 0.01, seed=0)
    assert Counter(labels[i] for i in subset) == {0: 1, 1: 1, 2: 1}


def test_deterministic_subset_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        deterministic_subset(LABELS, 0.0, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        deterministic_subset(LABELS, 1.5, seed=0)


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=200),
    small=st.floats(0.01, 1.0),
    large=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**31),
)
def test_deterministic_subset_properties(labels, small, large, seed):
    small, large = min(small, large), max(small, large)
    subset_small = deterministic_subset(labels, small, seed)
    subset_large = deterministic_subset(labels, large, seed)
    # Every class keeps at least one sample; indices are valid and unique.
    assert {labels[i] for i in subset_small} == set(labels)
    assert len(set(subset_large)) == len(subset_large)
    assert all(0 <= i < len(labels) for i in subset_large)
    # Nested like the SimCLR lists (1% inside 10%).
    assert set(subset_small) <= set(subset_large)
