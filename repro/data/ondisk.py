"""Small datasets written in the real on-disk formats, for preflight and tests.

``write_stl10`` writes ``stl10_binary/`` as the STL10 archive holds it (uint8 images of
3 x 96 x 96 in column-major order, labels 1..10 one byte each), so the suite's own reader
(torchvision's STL10) reads them. ``write_imagenet`` writes an ImageFolder tree of JPEGs
(``train/`` and ``val/``, one folder per class, ``.JPEG`` names like ImageNet's) at sizes
typical of ImageNet. The content is smooth random colour fields: the point is the format,
the decoder and the shapes, not what a network could learn from them. They are scratch data
(preflight writes them into a temporary folder), written plainly, not atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

STL10_SIZE = 96
# Width x height of ImageNet images: the most common sizes of the training set (500 x 375,
# 500 x 333, 375 x 500) and a larger one.
IMAGENET_SIZES = ((500, 375), (500, 333), (375, 500), (640, 480))


def _fields(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """n smooth RGB fields (n x height x width x 3 uint8): bilinear upsampling of 4 x 4 noise."""
    coarse = rng.uniform(0, 255, size=(n, 4, 4, 3))
    ys, xs = np.linspace(0, 3, height), np.linspace(0, 3, width)
    y0, x0 = np.minimum(ys.astype(int), 2), np.minimum(xs.astype(int), 2)
    wy, wx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    c = coarse
    top = c[:, y0][:, :, x0] * (1 - wx) + c[:, y0][:, :, x0 + 1] * wx
    bottom = c[:, y0 + 1][:, :, x0] * (1 - wx) + c[:, y0 + 1][:, :, x0 + 1] * wx
    image = top * (1 - wy) + bottom * wy + rng.normal(0, 8, size=(n, height, width, 3))
    return image.clip(0, 255).astype(np.uint8)


def write_stl10(root: str | os.PathLike, *, train: int = 64, unlabeled: int = 64, test: int = 32,
                seed: int = 0) -> Path:
    """``root/stl10_binary/`` with ``train`` + ``unlabeled`` + ``test`` images; returns root."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, labelled in (("train", train, True), ("unlabeled", unlabeled, False), ("test", test, True)):
        images = _fields(rng, n, STL10_SIZE, STL10_SIZE)  # n x H x W x 3
        # The archive's layout: per image, each channel column-major (torchvision transposes back).
        raw = np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()
        (folder / f"{name}_X.bin").write_bytes(raw)
        if labelled:
            labels = (np.arange(n) % 10 + 1).astype(np.uint8).tobytes()  # 1..10, every class
            (folder / f"{name}_y.bin").write_bytes(labels)
    return Path(root)


def write_imagenet(root: str | os.PathLike, *, classes: int = 2, train_per_class: int = 64,
                   val_per_class: int = 16, seed: int = 0) -> Path:
    """``root/{train,val}/nXXXXXXXX/*.JPEG`` at ImageNet-like sizes; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            wnid = f"n{k:08d}"
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                width, height = IMAGENET_SIZES[(i + k) % len(IMAGENET_SIZES)]
                image = Image.fromarray(_fields(rng, 1, height, width)[0])
                image.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=90)
    return Path(root)


WRITERS = {"stl10": write_stl10, "imagenet": write_imagenet}
