"""The generated Detectron2 configs against SPEC §4, without Detectron2."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

from repro.config import ConfigError
from repro.grid import expand, load_table
from repro.transfer import detectron2 as d2
from repro.transfer.datasets import dataset_sources

REPO = Path(__file__).resolve().parents[2]
WEIGHTS, OUT, DATA = "/w/backbone_detectron2.pkl", "/runs/x/detectron2", ("train_set", "test_set")


def _runs(table, profile="paper"):
    return {r.row: r.config for r in expand(load_table(table), profile)}


def _cfg(table, row, profile="paper"):
    return _runs(table, profile)[row]


def _config(cfg):
    return d2.detectron2_config(cfg, WEIGHTS, OUT, DATA)


TORCHVISION_OVERRIDES = {  # SPEC §4: torchvision-layout weights, SyncBN, PreciseBN
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.RESNETS.NORM": "SyncBN",
    "MODEL.FPN.NORM": "SyncBN",
    "TEST.PRECISE_BN.ENABLED": True,
}


@pytest.mark.parametrize("table,row,base,lr,max_iter,steps", [
    ("t09", "mask-1x-ours-300", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", 0.02, 90_000, [60_000, 80_000]),
    ("t09", "mask-2x-ours-300", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", 0.02, 180_000, [120_000, 160_000]),
    ("t09", "cascade-1x-ours-300", "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", 0.02, 90_000, [60_000, 80_000]),
    ("t09", "cascade-2x-ours-300", "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", 0.02, 180_000, [120_000, 160_000]),
    ("t10", "retinanet-1x-ours-300", "COCO-Detection/retinanet_R_50_FPN_1x.yaml", 0.01, 90_000, [60_000, 80_000]),
    ("t10", "retinanet-2x-ours-300", "COCO-Detection/retinanet_R_50_FPN_1x.yaml", 0.01, 180_000, [120_000, 160_000]),
    ("t11", "ours-300", "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", 0.02, 180_000, [120_000, 160_000]),
])
def test_paper_yacs_configs_carry_the_spec_values(table, row, base, lr, max_iter, steps):
    c = _config(_cfg(table, row))
    assert c["base_config"] == base and c["lazy"] is False
    o = c["overrides"]
    assert {k: o[k] for k in TORCHVISION_OVERRIDES} == TORCHVISION_OVERRIDES
    assert (o["SOLVER.BASE_LR"], o["SOLVER.MAX_ITER"], o["SOLVER.STEPS"]) == (lr, max_iter, steps)
    assert (o["SOLVER.IMS_PER_BATCH"], o["SOLVER.WARMUP_ITERS"], o["TEST.PRECISE_BN.NUM_ITER"]) == (16, 1000, 200)
    assert (o["MODEL.RESNETS.DEPTH"], o["MODEL.RESNETS.STEM_OUT_CHANNELS"], o["MODEL.RESNETS.RES2_OUT_CHANNELS"]) == (50, 64, 256)
    assert o["MODEL.WEIGHTS"] == WEIGHTS and o["OUTPUT_DIR"] == OUT
    assert (o["DATASETS.TRAIN"], o["DATASETS.TEST"]) == (["train_set"], ["test_set"])
    # COCO's scales (Section 4.5.2): short edge 640-800 by 32 in training, 800 at test.
    assert o["INPUT.MIN_SIZE_TRAIN"] == [640, 672, 704, 736, 768, 800] and o["INPUT.MIN_SIZE_TEST"] == 800
    # The paper's ResNet-50 fits Detectron2's stock builder: none of ours, no level renaming.
    assert "MODEL.BACKBONE.NAME" not in o and "MODEL.RESNETS.SMALL_STEM" not in o
    assert not any(k.endswith("IN_FEATURES") or k.startswith("MODEL.ANCHOR_GENERATOR") for k in o)
    # SyncBN in backbone and FPN only: the heads keep Detectron2's defaults.
    assert not any("HEAD" in k and k.endswith("NORM") for k in o)
    classes = "MODEL.RETINANET.NUM_CLASSES" if "retinanet" in row else "MODEL.ROI_HEADS.NUM_CLASSES"
    assert o[classes] == (1230 if table == "t11" else 80)


def test_lvis_settings():
    o = _config(_cfg("t11", "ours-300"))["overrides"]
    assert o["MODEL.ROI_HEADS.NUM_CLASSES"] == 1230
    assert o["DATALOADER.SAMPLER_TRAIN"] == "RepeatFactorTrainingSampler"
    assert o["DATALOADER.REPEAT_THRESHOLD"] == 0.001
    assert o["TEST.DETECTIONS_PER_IMAGE"] == 300
    assert o["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] == 1e-4
    coco = _config(_cfg("t09", "mask-2x-ours-300"))["overrides"]
    assert "DATALOADER.SAMPLER_TRAIN" not in coco and "TEST.DETECTIONS_PER_IMAGE" not in coco


@pytest.mark.parametrize("row,max_iter,milestones", [("fcos-1x-ours-300", 90_000, [60_000, 80_000, 90_000]),
                                                     ("fcos-2x-ours-300", 180_000, [120_000, 160_000, 180_000])])
def test_fcos_is_a_lazy_config_with_the_same_settings(row, max_iter, milestones):
    c = _config(_cfg("t10", row))
    assert c["base_config"] == "COCO-Detection/fcos_R_50_FPN_1x.py" and c["lazy"] is True
    o = c["overrides"]
    assert o["train.init_checkpoint"] == WEIGHTS and o["train.output_dir"] == OUT
    assert (o["optimizer.lr"], o["train.max_iter"], o["dataloader.train.total_batch_size"]) == (0.01, max_iter, 16)
    assert o["lr_multiplier.scheduler.milestones"] == milestones
    assert o["lr_multiplier.scheduler.values"] == pytest.approx([1.0, 0.1, 0.01])
    assert o["lr_multiplier.warmup_length"] == pytest.approx(1000 / max_iter)
    assert o["dataloader.train.mapper.image_format"] == "RGB"
    assert (o["model.pixel_mean"], o["model.pixel_std"]) == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    assert o["model.backbone.bottom_up.stages.stride_in_1x1"] is False
    assert o["model.backbone.bottom_up.freeze_at"] == 0  # the LazyConfig freezes 2 stages by default
    assert o["model.backbone.bottom_up.stem.norm"] == o["model.backbone.bottom_up.stages.norm"] == "SyncBN"
    assert o["model.backbone.norm"] == "SyncBN"  # the FPN
    assert o["train.precise_bn"] == {"enabled": True, "num_iter": 200}
    assert o["model.num_classes"] == 80
    assert (o["dataloader.train.dataset.names"], o["dataloader.test.dataset.names"]) == DATA
    # FIDELITY: single-scale 800 training (Section 4.5.2), 800 at test.
    resize, flip = o["dataloader.train.mapper.augmentations"]
    assert resize["short_edge_length"] == [800] and resize["max_size"] == 1333 and flip["horizontal"] is True
    assert o["dataloader.test.mapper.augmentations"][0]["short_edge_length"] == 800
    assert not any(k.startswith("model.head") for k in o)  # FCOS's GroupNorm head as Detectron2 has it


def test_small_profiles_use_our_backbone_and_renamed_levels():
    c = _cfg("t09", "mask-1x-ours-300", "smoke")
    o = _config(c)["overrides"]
    assert o["MODEL.BACKBONE.NAME"] == "build_torchvision_resnet_fpn_backbone"
    assert (o["MODEL.RESNETS.DEPTH"], o["MODEL.RESNETS.STEM_OUT_CHANNELS"], o["MODEL.RESNETS.RES2_OUT_CHANNELS"]) == (18, 8, 8)
    assert o["MODEL.RESNETS.SMALL_STEM"] is True
    # A stride-1 stem: levels p0..p4 instead of p2..p6, anchors 8 x stride.
    assert o["MODEL.RPN.IN_FEATURES"] == ["p0", "p1", "p2", "p3", "p4"]
    assert o["MODEL.ROI_HEADS.IN_FEATURES"] == ["p0", "p1", "p2", "p3"]
    assert o["MODEL.ANCHOR_GENERATOR.SIZES"] == [[8], [16], [32], [64], [128]]
    # 4 iterations: steps at 2/3 and 8/9 of the run (8/9 of 4 rounds to the end: dropped),
    # warm-up and PreciseBN capped at a tenth.
    assert (o["SOLVER.MAX_ITER"], o["SOLVER.STEPS"], o["SOLVER.WARMUP_ITERS"], o["TEST.PRECISE_BN.NUM_ITER"]) == (4, [3], 1, 1)
    # lr scaled linearly from 16 images to 2 (Detectron2's rule); SyncBN kept (plain BN in one process).
    assert o["SOLVER.BASE_LR"] == pytest.approx(0.02 * 2 / 16) and o["MODEL.RESNETS.NORM"] == "SyncBN"
    assert o["MODEL.ROI_HEADS.NUM_CLASSES"] == 3 and o["MODEL.FPN.OUT_CHANNELS"] == 64
    assert o["INPUT.MIN_SIZE_TRAIN"] == [32] and o["INPUT.MAX_SIZE_TEST"] == 40

    retina = _config(_cfg("t10", "retinanet-2x-ours-300", "local"))["overrides"]
    assert retina["MODEL.BACKBONE.NAME"] == "build_torchvision_retinanet_resnet_fpn_backbone"
    assert retina["MODEL.RETINANET.IN_FEATURES"] == ["p1", "p2", "p3", "p4", "p5"]
    assert [s[0] for s in retina["MODEL.ANCHOR_GENERATOR.SIZES"]] == [8, 16, 32, 64, 128]
    assert (retina["SOLVER.MAX_ITER"], retina["SOLVER.STEPS"], retina["MODEL.RESNETS.STEM_OUT_CHANNELS"]) == (400, [267, 356], 32)

    fcos = _config(_cfg("t10", "fcos-1x-ours-300", "smoke"))["overrides"]
    bottom_up = fcos["model.backbone.bottom_up"]
    assert bottom_up["_target_"] == "repro.transfer.d2_runtime.build_torchvision_resnet"
    assert (bottom_up["depth"], bottom_up["width"], bottom_up["small_stem"], bottom_up["norm"]) == (18, 8, True, "SyncBN")
    assert fcos["model.head_in_features"] == ["p1", "p2", "p3", "p4", "p5"]
    assert fcos["model.backbone.top_block.in_feature"] == "p3"

    lvis = _config(_cfg("t11", "ours-300", "smoke"))["overrides"]
    assert lvis["MODEL.ROI_HEADS.NUM_CLASSES"] == 1230 and lvis["TEST.DETECTIONS_PER_IMAGE"] == 300


def test_combinations_the_paper_does_not_define_are_config_errors():
    cfg = _cfg("t11", "ours-300")
    bad = dataclasses.replace(cfg, detection=dataclasses.replace(cfg.detection, detector="retinanet"))
    with pytest.raises(ConfigError, match="LVIS"):
        _config(bad)
    short = dataclasses.replace(cfg, detection=dataclasses.replace(cfg.detection, max_iter=0))
    with pytest.raises(ConfigError, match="max_iter"):
        _config(short)


def test_missing_detectron2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # makes `import detectron2` fail
    with pytest.raises(d2.Detectron2Missing) as e:
        d2.require_detectron2()
    message = str(e.value)
    assert isinstance(e.value, ConfigError) and "\n" not in message
    for needle in ("--no-build-isolation", "setuptools<81", "git+https://github.com/facebookresearch/detectron2.git"):
        assert needle in message
    with pytest.raises(d2.Detectron2Missing):
        d2.run_detection(_cfg("t09", "mask-1x-ours-300", "smoke"), "/nonexistent", "/nonexistent.pkl")


def test_only_d2_runtime_imports_detectron2_at_module_level():
    """Detectron2 is optional: every module but d2_runtime imports it lazily (inside functions)."""
    top_level = set()
    for path in sorted(REPO.joinpath("repro").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "detectron2" or n.startswith("detectron2.") for n in names):
                top_level.add(path.relative_to(REPO).as_posix())
    assert top_level == {"repro/transfer/d2_runtime.py"}


def test_the_two_sides_of_the_boundary_do_not_import_each_other():
    """detectron2.py (ours) and d2_runtime.py (Detectron2's side) share names through d2_names.py."""
    def imports(name):
        out = set()
        for node in ast.walk(ast.parse(REPO.joinpath("repro", "transfer", f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                out |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("repro.transfer."):
                out.add(node.module.split(".")[2])
        return out

    assert "d2_runtime" not in imports("detectron2") and "detectron2" not in imports("d2_runtime")
    assert "d2_names" in imports("detectron2") and "d2_names" in imports("d2_runtime")


def test_dataset_sources(tmp_path):
    sources = dataset_sources(_cfg("t11", "ours-300", "smoke"), tmp_path)
    (train, train_src), (val, val_src) = sources.items()
    assert "v0.5" in train and "v0.5" in val and train_src["format"] == "lvis"
    assert train_src["images"].endswith("/")  # LVIS appends coco_url's folder to the root
    coco = _cfg("t09", "mask-1x-ours-300")
    with pytest.raises(ValueError, match="coco/annotations/instances_train2017.json"):
        dataset_sources(dataclasses.replace(coco, data=dataclasses.replace(coco.data, root=str(tmp_path))), tmp_path)
    for name in ("train2017", "val2017", "annotations"):
        (tmp_path / "coco" / name).mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / "coco" / "annotations" / f"instances_{split}2017.json").write_text("{}")
    found = dataset_sources(dataclasses.replace(coco, data=dataclasses.replace(coco.data, root=str(tmp_path))), tmp_path)
    assert list(found) == ["repro_coco_2017_train", "repro_coco_2017_val"]


@pytest.mark.parametrize("row,key", [("retinanet-1x-ours-300", "MODEL.RETINANET.SCORE_THRESH_TEST"),
                                     ("fcos-1x-ours-300", "model.test_score_thresh")])
def test_one_stage_detectors_keep_low_scores_only_on_the_synthetic_data(row, key):
    """A few CPU iterations leave every score near the focal prior (0.01): below Detectron2's
    thresholds (0.05, 0.2) the model would make no detection and its AP would be undefined."""
    assert _config(_cfg("t10", row, "smoke"))["overrides"][key] == d2.SYNTHETIC_SCORE_THRESH == 1e-4
    assert key not in _config(_cfg("t10", row))["overrides"]  # the paper profile: Detectron2's own
    assert "MODEL.RETINANET.SCORE_THRESH_TEST" not in _config(_cfg("t09", "mask-1x-ours-300", "smoke"))["overrides"]
