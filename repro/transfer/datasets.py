"""The datasets a detection run registers with Detectron2 (no Detectron2 import: the registration
itself happens in `d2_runtime.register_datasets`, in every process Detectron2 starts)."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import DetectionConfig
from ..data.datasets import DatasetNotFound
from . import synthetic
from .d2_names import SYNTHETIC


def dataset_sources(cfg: DetectionConfig, run_dir: str | os.PathLike) -> dict[str, dict]:
    """The datasets a run registers: {name: {"format": "coco" | "lvis", "json": path, "images": path}}
    in the order (train, test). Synthetic data is written (deterministically) under the run.

    COCO / LVIS v0.5 are read from the layout Detectron2 documents for its builtin datasets, under
    data.root (or $DETECTRON2_DATASETS, or ./datasets): coco/{train2017,val2017}/,
    coco/annotations/instances_{train,val}2017.json, lvis/lvis_v0.5_{train,val}.json. Our names are
    prefixed "repro_" so they never clash with Detectron2's builtin registrations.
    """
    d = cfg.detection.dataset
    if d in SYNTHETIC:
        folder = Path(run_dir) / "synthetic_data"
        if d == "synthetic_coco":
            data = synthetic.write_coco(folder)
            names, fmt = ("repro_synthetic_coco_train", "repro_synthetic_coco_val"), "coco"
        else:
            data = synthetic.write_lvis(folder)
            # "v0.5" in the name: Detectron2 then attaches LVIS v0.5's 1230 class names.
            names, fmt = ("repro_synthetic_lvis_v0.5_train", "repro_synthetic_lvis_v0.5_val"), "lvis"
        # LVIS finds images through coco_url's folder, appended to the root: keep a trailing "/".
        roots = [str(data.train_images), str(data.val_images)] if fmt == "coco" else [str(folder) + "/"] * 2
        return {names[0]: {"format": fmt, "json": str(data.train_json), "images": roots[0]},
                names[1]: {"format": fmt, "json": str(data.val_json), "images": roots[1]}}
    root = Path(cfg.data.root or os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser()
    if d == "coco":
        sources = {f"repro_coco_2017_{s}": {"format": "coco", "json": str(root / f"coco/annotations/instances_{s}2017.json"),
                                            "images": str(root / f"coco/{s}2017")} for s in ("train", "val")}
    else:
        sources = {f"repro_lvis_v0.5_{s}": {"format": "lvis", "json": str(root / f"lvis/lvis_v0.5_{s}.json"),
                                            "images": str(root / "coco") + "/"} for s in ("train", "val")}
    missing = [p for src in sources.values() for p in (src["json"], src["images"]) if not Path(p).exists()]
    if missing:
        raise DatasetNotFound(
            f"{d} not found under {root}: missing {', '.join(missing[:3])}. Lay it out as Detectron2's "
            f"datasets/README.md says (coco/train2017, coco/val2017, coco/annotations/instances_*2017.json; "
            f"LVIS v0.5: lvis/lvis_v0.5_{{train,val}}.json beside coco/) and pass --data-root")
    return sources
