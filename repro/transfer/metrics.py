"""Detectron2's evaluation results, read on our side of the boundary (no Detectron2 import).

- `parse_metrics`: box and mask AP, AP50, AP75 (and the size / LVIS-frequency splits) from the
  nested dict Detectron2's evaluators return, or the flattened keys of its `metrics.json`;
- `lvis_numpy_guard`: lvis 0.5.3 calls `np.float`, which numpy 2 removed (ENV.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

_TASKS = {"bbox": "box", "segm": "mask"}
_METRICS = {"AP": "ap", "AP50": "ap50", "AP75": "ap75", "APs": "aps", "APm": "apm", "APl": "apl",
            "APr": "apr", "APc": "apc", "APf": "apf"}  # APr/c/f: LVIS's rare / common / frequent


def _number(value) -> float | None:
    value = float(value)
    # No number to show: NaN when the model made no detection at all (COCOEvaluator) or a size
    # range has no ground truth (COCO), -100 for the latter from LVISEvaluator (lvis's -1 x 100).
    return None if math.isnan(value) or value < 0 else value


def parse_metrics(results: Mapping) -> dict[str, float | None]:
    """box_ap, box_ap50, box_ap75 (and mask_*, and the size / LVIS-frequency splits present) in %.

    `results` is Detectron2's evaluation result, nested as its evaluators return it
    ({"bbox": {"AP": 39.7, "AP50": ...}, "segm": {...}}) or flattened as in its metrics.json
    ({"bbox/AP": 39.7, ...}). Per-class entries ("AP-person") are left out; undefined values (NaN:
    no detections; negative: no ground truth in that size range) become None. Raises ValueError when there is neither a bbox nor a segm result.
    """
    out: dict[str, float | None] = {}
    for task, prefix in _TASKS.items():
        nested = results.get(task)
        if isinstance(nested, Mapping):
            values = nested
        else:
            values = {k.split("/", 1)[1]: v for k, v in results.items() if isinstance(k, str) and k.startswith(task + "/")}
        for name, ours in _METRICS.items():
            if name in values:
                out[f"{prefix}_{ours}"] = _number(values[name])
    if "box_ap" not in out and "mask_ap" not in out:
        raise ValueError(f"no bbox or segm AP in the evaluation results (keys: {sorted(map(str, results))[:8]})")
    return out


@contextlib.contextmanager
def lvis_numpy_guard() -> Iterator[None]:
    """Let lvis 0.5.3's `np.float` work on numpy 2, only while the block runs.

    lvis/eval.py casts with `dtype=np.float`, removed in numpy 1.24 (ENV.md). Inside the block
    `np.float` is the builtin float (what it aliased); afterwards numpy is as it was: the alias is
    removed again if numpy had none, an existing attribute is left untouched.
    """
    import numpy as np

    had = "float" in np.__dict__
    if not had:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            np.__dict__.pop("float", None)
