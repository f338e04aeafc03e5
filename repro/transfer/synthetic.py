"""Tiny, deterministic detection datasets in COCO and LVIS v0.5 format (built-in data, SPEC §4).

They let the detection pipeline (export -> Detectron2 config -> train -> evaluate -> parse) run
end to end on a CPU in seconds, where COCO (118k images) and LVIS cannot: `make transfer-coco
PROFILE=smoke` and `make transfer-lvis PROFILE=smoke`. They stand in for the data only; their
APs say nothing about the paper's.

Each image is grey noise with 1-3 non-overlapping filled shapes. The category is the shape and
its colour together (a red rectangle, a green ellipse, a blue triangle), so even a few hundred
iterations learn something. Every object is annotated with its box and the polygon that drew it
(the mask), so both box and mask AP are defined.

Everything is a pure function of the arguments: numpy's Generator seeded once, PNG images
(lossless), JSON with sorted keys. Writing twice gives byte-identical files.

- COCO format (`write_coco`): `instances_{train,val}.json` with `images`, `annotations`
  (`bbox` [x, y, w, h], polygon `segmentation`, `area`, `iscrowd` 0) and 3 `categories`,
  images under `train/` and `val/`.
- LVIS v0.5 format (`write_lvis`): `lvis_v0.5_{train,val}.json` with LVIS v0.5's 1230 category
  ids (1..1230, as Detectron2's LVIS loader and the paper's 1230-class head expect), of which 3
  occur; each category has `frequency` (the 3 used ones are "f", "c", "r" so that APf / APc / APr
  are all defined), `synonyms`, `image_count`, `instance_count`; images list
  `neg_category_ids` (the used categories verified absent: LVIS counts false positives only on
  those) and `not_exhaustive_category_ids` ([]), and are found through `coco_url` like the real
  LVIS v0.5 (`<image_root>/<split folder of the url>/<file>`), images under `train2017/` and
  `val2017/`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_write_dir

# (name, RGB colour, shape): the category is the pair (colour, shape).
CATEGORIES = (
    ("red_rectangle", (220, 50, 50), "rectangle"),
    ("green_ellipse", (50, 200, 60), "ellipse"),
    ("blue_triangle", (60, 80, 230), "triangle"),
)
LVIS_V05_NUM_CATEGORIES = 1230  # LVIS v0.5's category ids are 1..1230 (SPEC §4)
# The LVIS ids our 3 categories take, and their frequency groups (frequent, common, rare).
LVIS_USED_IDS = (1, 2, 3)
LVIS_FREQUENCIES = ("f", "c", "r")

# Small: the CPU profiles' backbones keep full resolution (3x3 stride-1 stem, for 16 px digits),
# so a 32 x 40 image costs what a 128 x 160 one does behind Detectron2's stride-4 stem. Objects
# are 6-16 px, the scale those backbones were pre-trained at.
DEFAULT_HEIGHT, DEFAULT_WIDTH = 32, 40
DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL = 32, 8
_ELLIPSE_POINTS = 24
_MARKER = ".complete.json"  # written last: a folder with it holds a whole dataset


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a written dataset lies: the json file and image root of each split."""

    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path
    num_classes: int


# --------------------------------------------------------------------------- drawing


def _shape_polygon(shape: str, x0: float, y0: float, w: float, h: float) -> list[tuple[float, float]]:
    """The polygon (pixel coordinates) of `shape` inscribed in the box (x0, y0, w, h)."""
    if shape == "rectangle":
        return [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    if shape == "triangle":
        return [(x0 + w / 2, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    if shape == "ellipse":
        cx, cy, rx, ry = x0 + w / 2, y0 + h / 2, w / 2, h / 2
        return [(cx + rx * math.cos(2 * math.pi * k / _ELLIPSE_POINTS), cy + ry * math.sin(2 * math.pi * k / _ELLIPSE_POINTS))
                for k in range(_ELLIPSE_POINTS)]
    raise ValueError(f"unknown shape {shape!r}")


def _polygon_area(points: list[tuple[float, float]]) -> float:
    """Shoelace formula."""
    s = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]))
    return abs(s) / 2


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float], gap: float = 2.0) -> bool:
    return not (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0] or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])


def make_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[dict]]:
    """One image (H x W x 3 uint8) and its objects: {"category": index, "polygon", "bbox", "area"}."""
    # Grey noise (equal channels): colour alone separates objects from the background.
    grey = rng.integers(70, 180, size=(height, width, 1), dtype=np.uint8)
    image = Image.fromarray(np.repeat(grey, 3, axis=2))
    draw = ImageDraw.Draw(image)
    objects: list[dict] = []
    boxes: list[tuple[float, float, float, float]] = []
    min_side, max_side = max(6, min(height, width) // 5), max(8, min(height, width) // 2)
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):  # rejection sampling for a free spot
            w, h = (float(v) for v in rng.integers(min_side, max_side + 1, size=2))
            x0 = float(rng.integers(0, width - int(w)))
            y0 = float(rng.integers(0, height - int(h)))
            if not any(_overlaps((x0, y0, w, h), b) for b in boxes):
                break
        else:
            continue
        category = int(rng.integers(len(CATEGORIES)))
        _, colour, shape = CATEGORIES[category]
        jitter = rng.integers(-20, 21, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
        polygon = [(round(x, 2), round(y, 2)) for x, y in _shape_polygon(shape, x0, y0, w, h)]
        draw.polygon(polygon, fill=fill)
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        bbox = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
        boxes.append((x0, y0, w, h))
        objects.append({"category": category, "polygon": polygon, "bbox": bbox, "area": round(_polygon_area(polygon), 2)})
    return np.asarray(image), objects


def make_split(num_images: int, *, seed: int, height: int, width: int) -> list[tuple[np.ndarray, list[dict]]]:
    """`num_images` images of one split; a pure function of its arguments."""
    rng = np.random.default_rng(seed)
    return [make_image(rng, height, width) for _ in range(num_images)]


# --------------------------------------------------------------------------- writing


def _flat(polygon: list[tuple[float, float]]) -> list[float]:
    return [c for point in polygon for c in point]


def _coco_json(split: list[tuple[np.ndarray, list[dict]]], file_names: list[str], height: int, width: int) -> dict:
    images, annotations = [], []
    for image_id, ((_, objects), name) in enumerate(zip(split, file_names), start=1):
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category"] + 1,
                                "bbox": obj["bbox"], "area": obj["area"], "iscrowd": 0,
                                "segmentation": [_flat(obj["polygon"])]})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, (name, _, _) in enumerate(CATEGORIES)]
    return {"info": {"description": "repro synthetic COCO-format detection data"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}


def _lvis_json(split: list[tuple[np.ndarray, list[dict]]], file_names: list[str], folder: str, height: int,
               width: int) -> dict:
    used = {i: LVIS_USED_IDS[i] for i in range(len(CATEGORIES))}
    images, annotations = [], []
    for image_id, ((_, objects), name) in enumerate(zip(split, file_names), start=1):
        present = sorted({used[o["category"]] for o in objects})
        images.append({
            "id": image_id, "height": height, "width": width, "file_name": name, "license": 0,
            # Detectron2's LVIS loader takes the folder from the url (LVIS v0.5 points at COCO's).
            "coco_url": f"http://images.cocodataset.org/{folder}/{name}", "flickr_url": "",
            "date_captured": "", "not_exhaustive_category_ids": [],
            "neg_category_ids": sorted(set(LVIS_USED_IDS) - set(present)),
        })
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": used[obj["category"]], "bbox": obj["bbox"], "area": obj["area"],
                                "segmentation": [_flat(obj["polygon"])]})
    # image_count / instance_count over this split, as LVIS's files give them per split.
    counts = {cid: [0, 0] for cid in LVIS_USED_IDS}
    for _, objects in split:
        for cid in {used[o["category"]] for o in objects}:
            counts[cid][0] += 1
        for o in objects:
            counts[used[o["category"]]][1] += 1
    categories = []
    for cid in range(1, LVIS_V05_NUM_CATEGORIES + 1):
        if cid in LVIS_USED_IDS:
            index = LVIS_USED_IDS.index(cid)
            name, frequency = CATEGORIES[index][0], LVIS_FREQUENCIES[index]
        else:
            name, frequency = f"unused_{cid:04d}", "r"
        categories.append({"id": cid, "name": name, "synonyms": [name], "synset": f"{name}.n.01", "def": name,
                           "frequency": frequency, "image_count": counts.get(cid, [0, 0])[0],
                           "instance_count": counts.get(cid, [0, 0])[1]})
    return {"info": {"description": "repro synthetic LVIS-v0.5-format detection data"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}


def _write_json(path: Path, data: dict) -> None:
    # A plain write: only ever into the folder that atomic_write_dir renames into place.
    path.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))


def _write(folder: Path, fmt: str, num_train: int, num_val: int, height: int, width: int, seed: int) -> SyntheticDataset:
    folder = Path(folder)
    params = {"format": fmt, "num_train": num_train, "num_val": num_val, "height": height, "width": width,
              "seed": seed, "version": 1}
    if fmt == "coco":
        layout = {"train": ("train", "instances_train.json"), "val": ("val", "instances_val.json")}
        num_classes = len(CATEGORIES)
    else:
        layout = {"train": ("train2017", "lvis_v0.5_train.json"), "val": ("val2017", "lvis_v0.5_val.json")}
        num_classes = LVIS_V05_NUM_CATEGORIES
    result = SyntheticDataset(
        train_json=folder / layout["train"][1], train_images=folder / layout["train"][0],
        val_json=folder / layout["val"][1], val_images=folder / layout["val"][0], num_classes=num_classes)
    marker = folder / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return result  # already written with these parameters
    if folder.exists() and any(folder.iterdir()):
        if not marker.is_file():
            raise FileExistsError(f"{folder} exists and is not a synthetic dataset written by this module: "
                                  f"choose an empty or new folder")
        shutil.rmtree(folder)  # ours, with other parameters: rewrite

    # Separate seeds per split (train and val are independent draws of the same distribution).
    splits = {"train": make_split(num_train, seed=seed, height=height, width=width),
              "val": make_split(num_val, seed=seed + 1_000_003, height=height, width=width)}
    # Written aside and renamed (atomic_write_dir): a killed writer leaves no half dataset.
    def write(tmp: Path) -> None:
        for split_name, split in splits.items():
            image_dir, json_name = layout[split_name]
            (tmp / image_dir).mkdir()
            names = [f"{i + 1:012d}.png" for i in range(len(split))]
            for (pixels, _), name in zip(split, names):
                Image.fromarray(pixels).save(tmp / image_dir / name, format="PNG")
            if fmt == "coco":
                data = _coco_json(split, names, height, width)
            else:
                data = _lvis_json(split, names, image_dir, height, width)
            _write_json(tmp / json_name, data)
        _write_json(tmp / _MARKER, params)

    atomic_write_dir(folder, write)  # replaces the folder if it is empty (checked above)
    return result


def write_coco(folder: str | os.PathLike, *, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
               height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, seed: int = 0) -> SyntheticDataset:
    """Write (or find already written) the synthetic COCO-format dataset under `folder`."""
    return _write(Path(folder), "coco", num_train, num_val, height, width, seed)


def write_lvis(folder: str | os.PathLike, *, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
               height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, seed: int = 0) -> SyntheticDataset:
    """Write (or find already written) the synthetic LVIS-v0.5-format dataset under `folder`."""
    return _write(Path(folder), "lvis", num_train, num_val, height, width, seed)


def digest(folder: str | os.PathLike) -> str:
    """sha256 over every file of a written dataset (names and bytes), for determinism checks."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
