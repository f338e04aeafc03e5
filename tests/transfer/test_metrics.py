"""Box / mask AP parsed from Detectron2's outputs, and the numpy-2 guard for lvis (no Detectron2)."""

import json
import math
import types

import numpy as np
import pytest

import needs

from repro.transfer.metrics import lvis_numpy_guard, parse_metrics

# What Detectron2's COCOEvaluator returns for Mask R-CNN (an OrderedDict, values in %), with a
# few of the 80 per-class entries it adds.
COCO_RESULTS = {
    "bbox": {"AP": 39.7012, "AP50": 61.2168, "AP75": 43.1987, "APs": 23.4511, "APm": 43.0129, "APl": 51.1934,
             "AP-person": 53.9012, "AP-bicycle": 30.1215, "AP-toothbrush": 21.0044},
    "segm": {"AP": 36.8023, "AP50": 58.0311, "AP75": 39.6045, "APs": 17.5512, "APm": 39.3047, "APl": 53.0271,
             "AP-person": 46.8231, "AP-bicycle": 17.2012, "AP-toothbrush": 14.3001},
}
# LVISEvaluator adds the rare / common / frequent splits.
LVIS_RESULTS = {
    "bbox": {"AP": 26.9, "AP50": 43.1, "AP75": 28.4, "APs": 19.7, "APm": 34.5, "APl": 41.2, "APr": 14.8,
             "APc": 24.9, "APf": 33.0},
    "segm": {"AP": 26.1, "AP50": 39.8, "AP75": 28.1, "APs": 18.4, "APm": 33.9, "APl": 42.0, "APr": 16.2,
             "APc": 25.4, "APf": 30.3},
}
# Detectron2's metrics.json: one JSON object per line (JSONWriter, sort_keys), training scalars
# every 20 iterations, the evaluation after training flattened as "<task>/<metric>" and logged
# at iteration max_iter (90000 for 1x).
METRICS_JSON_LINES = [
    {"data_time": 0.0029, "eta_seconds": 31250.2, "fast_rcnn/cls_accuracy": 0.9271, "fast_rcnn/false_negative": 0.8912,
     "fast_rcnn/fg_cls_accuracy": 0.0911, "iteration": 19, "loss_box_reg": 0.1921, "loss_cls": 0.5012,
     "loss_mask": 0.6871, "loss_rpn_cls": 0.4921, "loss_rpn_loc": 0.1012, "lr": 0.000399, "mask_rcnn/accuracy": 0.5612,
     "mask_rcnn/false_negative": 0.3412, "mask_rcnn/false_positive": 0.4471, "roi_head/num_bg_samples": 493.2,
     "roi_head/num_fg_samples": 18.8, "rpn/num_neg_anchors": 251.4, "rpn/num_pos_anchors": 4.6, "time": 0.3481,
     "total_loss": 1.9737},
    {"data_time": 0.0031, "eta_seconds": 0.0, "iteration": 89999, "loss_box_reg": 0.2011, "loss_cls": 0.1821,
     "loss_mask": 0.2213, "loss_rpn_cls": 0.0241, "loss_rpn_loc": 0.0412, "lr": 0.0002, "time": 0.3312,
     "total_loss": 0.6731},
    {"bbox/AP": 39.7012, "bbox/AP-bicycle": 30.1215, "bbox/AP-person": 53.9012, "bbox/AP50": 61.2168,
     "bbox/AP75": 43.1987, "bbox/APl": 51.1934, "bbox/APm": 43.0129, "bbox/APs": 23.4511, "iteration": 90000,
     "segm/AP": 36.8023, "segm/AP-bicycle": 17.2012, "segm/AP-person": 46.8231, "segm/AP50": 58.0311,
     "segm/AP75": 39.6045, "segm/APl": 53.0271, "segm/APm": 39.3047, "segm/APs": 17.5512},
]
EXPECTED_COCO = {"box_ap": 39.7012, "box_ap50": 61.2168, "box_ap75": 43.1987, "box_aps": 23.4511,
                 "box_apm": 43.0129, "box_apl": 51.1934, "mask_ap": 36.8023, "mask_ap50": 58.0311,
                 "mask_ap75": 39.6045, "mask_aps": 17.5512, "mask_apm": 39.3047, "mask_apl": 53.0271}


def test_nested_coco_results():
    assert parse_metrics(COCO_RESULTS) == EXPECTED_COCO


def test_box_only_detectors_have_no_mask_keys():
    out = parse_metrics({"bbox": COCO_RESULTS["bbox"]})
    assert set(out) == {"box_ap", "box_ap50", "box_ap75", "box_aps", "box_apm", "box_apl"}


def test_lvis_results_keep_the_frequency_splits():
    out = parse_metrics(LVIS_RESULTS)
    assert (out["mask_ap"], out["mask_ap50"], out["mask_ap75"]) == (26.1, 39.8, 28.1)
    assert (out["mask_apr"], out["mask_apc"], out["mask_apf"]) == (16.2, 25.4, 30.3)
    # LVISEvaluator writes -100 (lvis's -1 x 100) for a size range without ground truth.
    small_only = {"bbox": {**LVIS_RESULTS["bbox"], "APm": -100.0, "APl": -100.0}}
    assert (parse_metrics(small_only)["box_apm"], parse_metrics(small_only)["box_apl"]) == (None, None)


def _final_evaluation(path):
    """The last line of a metrics.json (one JSON object per line) that holds an evaluation."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if "bbox/AP" in r or "segm/AP" in r][-1]


def test_metrics_json_file(tmp_path):
    # metrics.json flattens the evaluation ("bbox/AP"): parse_metrics reads it the same.
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in METRICS_JSON_LINES))
    assert parse_metrics(_final_evaluation(path)) == EXPECTED_COCO


def test_no_detections_is_none_not_nan(tmp_path):
    # COCOEvaluator's "No predictions from the model!": every metric NaN (json writes NaN).
    nan = {k: float("nan") for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    assert set(parse_metrics({"bbox": nan}).values()) == {None}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"bbox/AP": math.nan, "iteration": 9}) + "\n")
    assert parse_metrics(_final_evaluation(path)) == {"box_ap": None}


def test_missing_evaluation_is_an_error():
    with pytest.raises(ValueError, match="no bbox or segm"):
        parse_metrics({"sem_seg": {"mIoU": 40.0}})
    with pytest.raises(ValueError, match="no bbox or segm"):
        parse_metrics(METRICS_JSON_LINES[0])  # a training line: losses, no evaluation


# --------------------------------------------------------------------------- the lvis guard


def _fake_lvis_eval():
    """lvis/eval.py's offending line, as a stand-in module."""
    module = types.ModuleType("fake_lvis_eval")

    def accumulate(tps):
        return np.cumsum(tps, axis=1).astype(dtype=np.float)

    module.accumulate = accumulate
    return module


def test_guard_sets_np_float_only_inside():
    had = "float" in np.__dict__
    fake = _fake_lvis_eval()
    with lvis_numpy_guard():
        assert fake.accumulate(np.ones((2, 3))).dtype == np.float64
    assert ("float" in np.__dict__) == had
    if not had:  # numpy >= 1.24: the alias is gone again
        with pytest.raises(AttributeError):
            fake.accumulate(np.ones((2, 3)))


def test_guard_restores_after_an_exception_and_keeps_an_existing_attribute(monkeypatch):
    had = "float" in np.__dict__
    with pytest.raises(RuntimeError):
        with lvis_numpy_guard():
            raise RuntimeError("evaluation failed")
    assert ("float" in np.__dict__) == had
    sentinel = object()
    monkeypatch.setattr(np, "float", sentinel, raising=False)
    with lvis_numpy_guard():
        assert np.float is sentinel  # a numpy that has it: left alone
    assert np.float is sentinel


def test_guard_makes_the_real_lvis_evaluation_work(tmp_path):
    lvis = needs.module("lvis", "the transfer extra: pip install -e '.[transfer]'")
    from repro.transfer.synthetic import write_lvis

    data = write_lvis(tmp_path / "lvis")
    gt = lvis.LVIS(str(data.val_json))
    # Perfect detections: every ground-truth box, score 1.
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt.dataset["annotations"]]

    def evaluate():
        e = lvis.LVISEval(gt, lvis.LVISResults(gt, results), "bbox")
        e.run()
        return e.get_results()

    if "float" not in np.__dict__:  # numpy 2: lvis 0.5.3 fails without the guard (ENV.md)
        with pytest.raises(AttributeError, match="float"):
            evaluate()
    with lvis_numpy_guard():
        got = evaluate()
    assert got["AP"] == pytest.approx(1.0)  # lvis reports fractions; Detectron2 scales them by 100
    assert "float" in np.__dict__ or not hasattr(np, "float")
