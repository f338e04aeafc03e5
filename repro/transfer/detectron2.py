"""Detection transfer with Detectron2 (Tables 9-11, SPEC §4): config, launch, metrics.

Detectron2 is an optional extra (not on PyPI, never vendored): this module imports it only inside
`run_detection`, and everything on our side of the boundary works without it:

- `detectron2_config(cfg, weights, output_dir, datasets)`: the run's Detectron2 config as a PLAIN
  dict (base config of Detectron2's model zoo + dotted overrides), so the numbers can be checked
  against SPEC §4 without Detectron2: one frozen `DetectionPlan` (iterations, steps, warm-up, lr,
  depth, norm, classes, PreciseBN iterations, sizes) rendered as yacs or LazyConfig overrides;
- `run_detection(cfg, run_dir, weights_pkl, num_gpus)`: builds the real config, trains with
  Detectron2's trainer under `detectron2.engine.launch` (one process per GPU, spawned INSIDE the
  job: the job is one task holding `num_gpus` GPUs), evaluates, returns the parsed metrics.

The fixed overrides for torchvision-layout weights are data (`torchvision_weights.yaml`); the
metrics parsing lives in `repro.transfer.metrics`, the datasets a run registers in
`repro.transfer.datasets`, the names both sides share in `repro.transfer.d2_names`.

The Detectron2-side code (the trainer, the backbone for our CPU-scale ResNets) lives in
`repro.transfer.d2_runtime`, which imports Detectron2 at import time and registers its backbones
on import (SPEC §6: a module registered only inside a training script breaks other entry points).

How the overrides map (yacs configs; FCOS exists only as a LazyConfig):

| what (SPEC §4)               | yacs key                                  | LazyConfig key (FCOS)                          |
|------------------------------|-------------------------------------------|------------------------------------------------|
| weights                      | MODEL.WEIGHTS                             | train.init_checkpoint                          |
| RGB input                    | INPUT.FORMAT                              | dataloader.train.mapper.image_format (test follows) |
| torchvision mean / std       | MODEL.PIXEL_MEAN / MODEL.PIXEL_STD        | model.pixel_mean / model.pixel_std             |
| stride on the 3x3 conv       | MODEL.RESNETS.STRIDE_IN_1X1 False         | model.backbone.bottom_up.stages.stride_in_1x1  |
| train every stage            | MODEL.BACKBONE.FREEZE_AT 0                | model.backbone.bottom_up.freeze_at             |
| SyncBN in backbone           | MODEL.RESNETS.NORM                        | model.backbone.bottom_up.{stem,stages}.norm    |
| SyncBN in FPN                | MODEL.FPN.NORM                            | model.backbone.norm                            |
| PreciseBN                    | TEST.PRECISE_BN.{ENABLED,NUM_ITER}        | train.precise_bn.{enabled,num_iter} (ours: added by d2_runtime) |
| lr, batch                    | SOLVER.BASE_LR, SOLVER.IMS_PER_BATCH      | optimizer.lr, dataloader.train.total_batch_size |
| 1x / 2x                      | SOLVER.MAX_ITER, SOLVER.STEPS             | train.max_iter, lr_multiplier.scheduler.milestones |
| warm-up                      | SOLVER.WARMUP_ITERS                       | lr_multiplier.warmup_length (a fraction)       |
| data                         | DATASETS.TRAIN / DATASETS.TEST            | dataloader.{train,test}.dataset.names          |
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import ConfigError, DetectionConfig, load_yaml
from ..train.checkpoint import sha256
from . import synthetic
from .d2_names import RESULTS_FILE, RUNTIME_MODULE, SYNTHETIC
from .datasets import dataset_sources
from .metrics import parse_metrics

# --------------------------------------------------------------------------- facts (SPEC §4)

# Base configs in Detectron2's model zoo (`detectron2.model_zoo.get_config_file(path)`). Each is
# the 1x schedule; 2x is set by the overrides (no 2x file exists for these models).
BASE_CONFIGS = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "cascade_mask_rcnn": "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "fcos": "COCO-Detection/fcos_R_50_FPN_1x.py",  # a LazyConfig (Python), the only FCOS config
}
LVIS_BASE_CONFIG = "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
# lr at batch 16: 0.02 for the R-CNNs, 0.01 for the one-stage detectors (Detectron2's, SPEC §4).
BASE_LR = {"mask_rcnn": 0.02, "cascade_mask_rcnn": 0.02, "retinanet": 0.01, "fcos": 0.01}
# (iterations, lr steps) at batch 16: 1x = 90k iters x 16 images = 1.44M images, about 12 COCO
# epochs (118k images); 2x doubles it. The steps sit at 2/3 and 8/9 of the run in both.
SCHEDULES = {"1x": (90_000, (60_000, 80_000)), "2x": (180_000, (120_000, 160_000))}
WARMUP_ITERS = 1_000  # Detectron2's default linear warm-up (from 0.001 x lr)
PRECISE_BN_ITERS = 200  # Detectron2's default TEST.PRECISE_BN.NUM_ITER
# The fixed overrides torchvision-layout weights need (RGB, torchvision's mean / std, stride on the
# 3x3 conv, no frozen stage): {"yacs": {key: value}, "lazy": {key: value}}.
TORCHVISION_WEIGHTS = load_yaml(Path(__file__).with_name("torchvision_weights.yaml"))
# LVIS v0.5 (SPEC §4): 1230 classes, repeat-factor sampling at 0.001, 300 detections per image,
# score threshold 1e-4 (Detectron2's LVIS config).
LVIS_CLASSES = 1230
LVIS_REPEAT_THRESHOLD = 0.001
LVIS_DETECTIONS_PER_IMAGE = 300
LVIS_SCORE_THRESH = 1e-4
NUM_CLASSES = {"coco": 80, "lvis_v0.5": LVIS_CLASSES, "synthetic_coco": len(synthetic.CATEGORIES),
               "synthetic_lvis": LVIS_CLASSES}
# The COCO training scales (Section 4.5.2: short edge in [640, 800] at 32 px steps, 800 at test).
COCO_TRAIN_SIZES = [640, 672, 704, 736, 768, 800]
COCO_TEST_SIZE = 800
COCO_MAX_SIZE = 1333
# Detectron2's default feature levels (standard stem: res2..res5 at strides 4..32).
_RCNN_LEVELS = ["p2", "p3", "p4", "p5", "p6"]
_ONE_STAGE_LEVELS = ["p3", "p4", "p5", "p6", "p7"]
_RPN_ANCHORS = [[32], [64], [128], [256], [512]]  # 8 x stride of p2..p6
# DEVIATION (CPU stand-in data, synthetic_*): narrower FPN and heads, fewer sampled RoIs and
# proposals (images hold 1-3 objects): 0.2 s instead of 5-8 s per Mask R-CNN step on 2 CPU
# cores, where RoIAlign's backward over 512 RoIs x 256 channels and the 1024-wide box head
# dominated.
CPU_FPN_CHANNELS = 64
_CPU_HEADS_YACS = {
    "MODEL.FPN.OUT_CHANNELS": CPU_FPN_CHANNELS,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 256,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 64,
    # 100 proposals per test image, not 1000: with LVIS's 1230 classes and score threshold 1e-4 an
    # untrained head keeps every class of every proposal (1/1231 > 1e-4): 1.2M boxes into NMS,
    # 50 s per image on 2 cores.
    "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
}
# DEVIATION (CPU stand-in data): the one-stage detectors' test score threshold. Their heads
# start from a focal-loss prior of 0.01 per class, and after the few iterations of a CPU
# profile no anchor clears Detectron2's thresholds (RetinaNet 0.05, FCOS 0.2): the model makes
# no detection and COCO's AP is undefined. At 1e-4 (the LVIS setting) the barely trained
# model's detections are kept and scored, so the table shows a measured (small) AP.
SYNTHETIC_SCORE_THRESH = 1e-4

INSTALL_HINT = (
    "Detectron2 is not installed (the detection tables t09-t11 need it; everything else runs without). "
    "It is not on PyPI: install it from source into this environment, torch and torchvision first, then "
    "`pip install 'setuptools<81' pycocotools 'lvis>=0.5.3'` (or `pip install -e '.[transfer]'`) and "
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git@"
    "02b5c4e295e990042a714712c21dc79b731e8833'` (the commit CI tests against; docs/transfer.md) "
    "(setuptools<81: detectron2.model_zoo imports pkg_resources; --no-build-isolation: the build needs "
    "the installed torch; a few minutes, also on CPU). Detectron2 has no release since v0.6: the commit "
    "you install is recorded in each run's final.json"
)


class Detectron2Missing(ConfigError):
    """Detectron2 is not importable; the message says how to install it."""


def require_detectron2():
    """Import Detectron2 or raise Detectron2Missing with the install instructions."""
    try:
        return importlib.import_module("detectron2")
    except ImportError as e:
        raise Detectron2Missing(f"{INSTALL_HINT} (import error: {e})") from None


# --------------------------------------------------------------------------- the config


def _tenth_of_run(default: int, max_iter: int) -> int:
    """DEVIATION (shortened runs of the small profiles): the warm-up and PreciseBN's forward
    passes are capped at a tenth of the run (200 extra passes would double a 200-iteration CPU
    run), and at least 1."""
    return max(1, min(default, max_iter // 10))


def _schedule(cfg: DetectionConfig) -> tuple[int, list[int], int, int]:
    """(max_iter, steps, warm-up iterations, PreciseBN iterations) of the run."""
    full_iter, full_steps = SCHEDULES[cfg.detection.schedule]
    max_iter = cfg.detection.max_iter
    if max_iter is None:
        return full_iter, list(full_steps), WARMUP_ITERS, PRECISE_BN_ITERS
    if max_iter < 1:
        raise ConfigError(f"detection.max_iter: must be positive, got {max_iter}")
    # DEVIATION (shortened runs): the steps keep their place in the schedule (2/3 and 8/9 of the
    # run; a run too short to hold both keeps those that fall strictly inside it, as Detectron2's
    # scheduler requires).
    steps = sorted({round(max_iter * s / full_iter) for s in full_steps} & set(range(1, max_iter)))
    return max_iter, steps, _tenth_of_run(WARMUP_ITERS, max_iter), _tenth_of_run(PRECISE_BN_ITERS, max_iter)


def _levels(names: list[str], shift: int) -> list[str]:
    """FPN level names after the stem: Detectron2 names a level p<log2(stride)>; the small stem
    (stride 1 instead of 4) shifts every level down by 2."""
    return [f"p{int(n[1:]) - shift}" for n in names]


@dataclass(frozen=True)
class DetectionPlan:
    """What a detection run's Detectron2 config is made of, computed once from the run's config
    (:func:`detection_plan`) and rendered as yacs or LazyConfig overrides."""

    detector: str
    dataset: str
    max_iter: int
    steps: tuple[int, ...]
    warmup: int  # iterations
    base_lr: float
    ims_per_batch: int
    depth: int  # 18 or 50
    width: int
    small_stem: bool
    norm: str
    num_classes: int
    precise_bn_iters: int
    train_sizes: tuple[int, ...]  # short edge, sampled per image
    test_size: int
    max_size: int
    seed: int
    eval_period: int
    checkpoint_period: int
    workers: int

    @property
    def lvis(self) -> bool:
        return self.dataset in ("lvis_v0.5", "synthetic_lvis")

    @property
    def synthetic(self) -> bool:
        return self.dataset in SYNTHETIC

    @property
    def shift(self) -> int:
        return 2 if self.small_stem else 0

    @property
    def standard_backbone(self) -> bool:
        """Whether Detectron2's stock ResNet builder can hold our backbone (7x7 stem, width 64)."""
        return self.width == 64 and not self.small_stem


def detection_plan(cfg: DetectionConfig) -> DetectionPlan:
    """The run's plan; raises ConfigError for combinations the paper does not define."""
    d = cfg.detection
    if d.dataset in ("lvis_v0.5", "synthetic_lvis") and d.detector != "mask_rcnn":
        raise ConfigError(f"detection.detector: LVIS (Table 11) is run with mask_rcnn only, got {d.detector!r}")
    if cfg.model.arch not in ("resnet18", "resnet50"):
        raise ConfigError(f"model.arch: {cfg.model.arch!r} has no Detectron2 ResNet")
    max_iter, steps, warmup, precise_bn_iters = _schedule(cfg)
    if d.dataset in SYNTHETIC:
        # DEVIATION (CPU stand-in data): the synthetic images are small (32 x 40): no rescaling.
        h, w = synthetic.DEFAULT_HEIGHT, synthetic.DEFAULT_WIDTH
        train_sizes, test_size, max_size = (h,), h, w
    else:
        train_sizes, test_size, max_size = tuple(COCO_TRAIN_SIZES), COCO_TEST_SIZE, COCO_MAX_SIZE
    return DetectionPlan(
        detector=d.detector, dataset=d.dataset, max_iter=max_iter, steps=tuple(steps), warmup=warmup,
        # Detectron2's lr is for 16 images per step; another batch scales it linearly (its own
        # rule, SOLVER.REFERENCE_WORLD_SIZE). The paper profiles run 16: 0.02 / 0.01 as SPEC §4.
        base_lr=d.base_lr if d.base_lr is not None else BASE_LR[d.detector] * d.ims_per_batch / 16,
        ims_per_batch=d.ims_per_batch, depth=50 if cfg.model.arch == "resnet50" else 18, width=cfg.model.width,
        small_stem=cfg.model.small_stem,
        # FIDELITY: SyncBN in the backbone and the FPN only (SPEC §4), the heads keep Detectron2's
        # defaults. In one process (the CPU profiles) SyncBN computes plain BN statistics.
        norm="SyncBN", num_classes=NUM_CLASSES[d.dataset], precise_bn_iters=precise_bn_iters,
        train_sizes=train_sizes, test_size=test_size, max_size=max_size, seed=cfg.train.seed,
        eval_period=d.eval_period, checkpoint_period=min(cfg.train.checkpoint_every, max_iter), workers=cfg.data.workers,
    )


def detectron2_config(cfg: DetectionConfig, weights: str | os.PathLike, output_dir: str | os.PathLike,
                      datasets: tuple[str, str]) -> dict:
    """The Detectron2 config of a detection run, as plain data.

    Returns {"base_config": model-zoo path, "lazy": bool (a LazyConfig .py, FCOS), "overrides":
    {dotted key: value}}. yacs overrides use Detectron2's names ("MODEL.RESNETS.NORM"); lazy ones
    the LazyConfig's ("model.backbone.bottom_up.stem.norm"), where a value that is a mapping with
    "_target_" replaces the whole node by that object. `datasets` = (train name, test name), as
    registered by the caller. Raises ConfigError for combinations the paper does not define.
    """
    plan = detection_plan(cfg)
    if plan.detector == "fcos":
        return {"base_config": BASE_CONFIGS["fcos"], "lazy": True,
                "overrides": lazy_overrides(plan, weights, output_dir, datasets)}
    base = LVIS_BASE_CONFIG if plan.lvis else BASE_CONFIGS[plan.detector]
    return {"base_config": base, "lazy": False, "overrides": yacs_overrides(plan, weights, output_dir, datasets)}


def yacs_overrides(plan: DetectionPlan, weights, output_dir, datasets: tuple[str, str]) -> dict:
    """The plan as overrides of a yacs config (the R-CNNs, RetinaNet)."""
    one_stage = plan.detector == "retinanet"
    o: dict = {
        "MODEL.WEIGHTS": str(weights),
        "OUTPUT_DIR": str(output_dir),
        "SEED": plan.seed,
        **TORCHVISION_WEIGHTS["yacs"],  # torchvision-layout weights (SPEC §4, §6)
        "MODEL.RESNETS.DEPTH": plan.depth,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": plan.width,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": plan.width * (4 if plan.depth == 50 else 1),
        "MODEL.RESNETS.NORM": plan.norm,
        "MODEL.FPN.NORM": plan.norm,
        "TEST.PRECISE_BN.ENABLED": True,
        "TEST.PRECISE_BN.NUM_ITER": plan.precise_bn_iters,
        # schedule at batch 16
        "SOLVER.IMS_PER_BATCH": plan.ims_per_batch,
        "SOLVER.BASE_LR": plan.base_lr,
        "SOLVER.MAX_ITER": plan.max_iter,
        "SOLVER.STEPS": list(plan.steps),
        "SOLVER.WARMUP_ITERS": plan.warmup,
        "SOLVER.CHECKPOINT_PERIOD": plan.checkpoint_period,
        "TEST.EVAL_PERIOD": plan.eval_period,
        "DATASETS.TRAIN": [datasets[0]],
        "DATASETS.TEST": [datasets[1]],
        "DATALOADER.NUM_WORKERS": plan.workers,
        "INPUT.MIN_SIZE_TRAIN": list(plan.train_sizes),
        "INPUT.MAX_SIZE_TRAIN": plan.max_size,
        "INPUT.MIN_SIZE_TEST": plan.test_size,
        "INPUT.MAX_SIZE_TEST": plan.max_size,
        ("MODEL.RETINANET.NUM_CLASSES" if one_stage else "MODEL.ROI_HEADS.NUM_CLASSES"): plan.num_classes,
    }
    if not plan.standard_backbone:
        # DEVIATION (CPU-scale profiles): our half-width / small-stem ResNets do not fit Detectron2's
        # stock builder (it fixes R18 at width 64 and the 7x7 stem); d2_runtime builds the same
        # ResNet from Detectron2's blocks, under the same weight names.
        o["MODEL.BACKBONE.NAME"] = ("build_torchvision_retinanet_resnet_fpn_backbone" if one_stage
                                    else "build_torchvision_resnet_fpn_backbone")
        o["MODEL.RESNETS.SMALL_STEM"] = plan.small_stem  # our key, added by d2_runtime
    o.update(_yacs_levels(plan.shift, one_stage))
    if plan.synthetic:
        o.update(_CPU_HEADS_YACS)
        if one_stage:
            o["MODEL.RETINANET.SCORE_THRESH_TEST"] = SYNTHETIC_SCORE_THRESH
    if plan.lvis:
        o.update({
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": LVIS_SCORE_THRESH,
            "TEST.DETECTIONS_PER_IMAGE": LVIS_DETECTIONS_PER_IMAGE,
            "DATALOADER.SAMPLER_TRAIN": "RepeatFactorTrainingSampler",
            "DATALOADER.REPEAT_THRESHOLD": LVIS_REPEAT_THRESHOLD,
        })
    return o


def _yacs_levels(shift: int, one_stage: bool) -> dict:
    """The small stem keeps stride 1 (not 4): levels are renamed and anchors scaled with the
    strides (Detectron2's are 8 x stride for the RPN, 4 x stride x 3 scales for RetinaNet)."""
    if not shift:
        return {}
    if one_stage:
        return {"MODEL.RETINANET.IN_FEATURES": _levels(_ONE_STAGE_LEVELS, shift),
                "MODEL.ANCHOR_GENERATOR.SIZES": [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (8, 16, 32, 64, 128)]}
    return {"MODEL.RPN.IN_FEATURES": _levels(_RCNN_LEVELS, shift),
            "MODEL.ROI_HEADS.IN_FEATURES": _levels(_RCNN_LEVELS[:4], shift),
            "MODEL.ANCHOR_GENERATOR.SIZES": [[s[0] // 4] for s in _RPN_ANCHORS]}


def lazy_overrides(plan: DetectionPlan, weights, output_dir, datasets: tuple[str, str]) -> dict:
    """The plan as overrides of FCOS's LazyConfig (configs/COCO-Detection/fcos_R_50_FPN_1x.py)."""
    resize = "detectron2.data.transforms.ResizeShortestEdge"
    # FIDELITY: "FCOS trains with a single-scale of 800 pixels" (Section 4.5.2), while
    # Detectron2's FCOS config trains multi-scale (640-800): the paper's text is followed.
    train_sizes = list(plan.train_sizes) if plan.synthetic else [800]
    o: dict = {
        "train.init_checkpoint": str(weights),
        "train.output_dir": str(output_dir),
        "train.seed": plan.seed,
        "train.max_iter": plan.max_iter,
        "train.eval_period": plan.eval_period,
        "train.checkpointer.period": plan.checkpoint_period,
        # PreciseBN: the LazyConfig trainer has no such option; d2_runtime adds the hook from these.
        "train.precise_bn": {"enabled": True, "num_iter": plan.precise_bn_iters},
        "optimizer.lr": plan.base_lr,
        # The lr multiplier is scale-free (milestones relative to the last one): these are the
        # iterations of the run. warmup_length is a fraction of the run.
        "lr_multiplier.scheduler.milestones": [*plan.steps, plan.max_iter],
        "lr_multiplier.scheduler.values": [1.0, 0.1, 0.01][: len(plan.steps) + 1],
        "lr_multiplier.warmup_length": plan.warmup / plan.max_iter,
        "dataloader.train.total_batch_size": plan.ims_per_batch,
        "dataloader.train.num_workers": plan.workers,
        "dataloader.test.num_workers": plan.workers,
        "dataloader.train.dataset.names": datasets[0],
        "dataloader.test.dataset.names": datasets[1],
        "dataloader.evaluator.output_dir": str(Path(output_dir) / "inference"),
        **TORCHVISION_WEIGHTS["lazy"],  # torchvision-layout weights (SPEC §4, §6)
        "model.num_classes": plan.num_classes,
        "model.backbone.norm": plan.norm,  # the FPN's
        "dataloader.train.mapper.augmentations": [
            {"_target_": resize, "short_edge_length": train_sizes, "sample_style": "choice", "max_size": plan.max_size},
            {"_target_": "detectron2.data.transforms.RandomFlip", "horizontal": True},
        ],
        "dataloader.test.mapper.augmentations": [
            {"_target_": resize, "short_edge_length": plan.test_size, "max_size": plan.max_size},
        ],
    }
    o.update(_lazy_backbone(plan))
    if plan.synthetic:  # DEVIATION: see _CPU_HEADS_YACS
        c = CPU_FPN_CHANNELS
        o["model.backbone.out_channels"] = c
        o["model.backbone.top_block.in_channels"] = c  # FCOS's P6 is computed from P5 (c channels)
        o["model.head.conv_dims"] = [c] * 4
        o["model.head.input_shape"] = [{"_target_": "detectron2.layers.ShapeSpec", "channels": c}] * 5
        o["model.test_score_thresh"] = SYNTHETIC_SCORE_THRESH
    if plan.shift:
        o["model.head_in_features"] = _levels(_ONE_STAGE_LEVELS, plan.shift)
        o["model.backbone.top_block.in_feature"] = _levels(["p5"], plan.shift)[0]
    return o


def _lazy_backbone(plan: DetectionPlan) -> dict:
    if plan.depth == 50 and plan.standard_backbone:
        return {
            "model.backbone.bottom_up.stem.norm": plan.norm,
            "model.backbone.bottom_up.stages.norm": plan.norm,
            "model.backbone.bottom_up.stages.depth": plan.depth,
            "model.backbone.bottom_up.stages.stride_in_1x1": False,
            "model.backbone.bottom_up.freeze_at": 0,
        }
    # DEVIATION (CPU-scale profiles): see the yacs branch; the same ResNet from d2_runtime.
    return {"model.backbone.bottom_up": {
        "_target_": f"{RUNTIME_MODULE}.build_torchvision_resnet", "depth": plan.depth, "width": plan.width,
        "small_stem": plan.small_stem, "norm": plan.norm, "out_features": ["res3", "res4", "res5"],
        "freeze_at": 0,
    }}


# --------------------------------------------------------------------------- running


# Written into the installed distribution's .dist-info by .ci/detectron2/install.sh (pip removes
# it with any reinstall, so it cannot outlive the build it describes).
COMMIT_RECORD = "REPRO_DETECTRON2_COMMIT"
_SHA1 = re.compile(r"[0-9a-f]{40}")


def detectron2_commit() -> dict:
    """Detectron2's version and git commit (SPEC §6: record it); "unknown" where it cannot be told."""
    d2 = require_detectron2()
    return {"detectron2_version": getattr(d2, "__version__", None) or "unknown",
            "detectron2_commit": installed_commit(d2)}


def installed_commit(d2) -> str:
    """The git commit of the imported `detectron2` module, or "unknown".

    Read, in order, from: the record of .ci/detectron2/install.sh; pip's direct_url.json (an install
    from the repository, `pip install git+...@<commit>`, records vcs_info.commit_id); the git
    checkout that IS Detectron2's source (an editable install), never an enclosing repository
    (site-packages inside some project's git tree). A distribution counts only if it is the one
    imported.
    """
    import importlib.metadata as md
    from urllib.parse import unquote, urlparse

    init = Path(d2.__file__).resolve()
    try:
        dist = md.distribution("detectron2")
    except md.PackageNotFoundError:
        dist = None
    if dist is not None:
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            direct = {}
        url = urlparse(direct.get("url", ""))
        editable_dir = (Path(unquote(url.path)).resolve()
                        if direct.get("dir_info", {}).get("editable") and url.scheme == "file" else None)
        if Path(dist.locate_file("detectron2/__init__.py")).resolve() == init or (
                editable_dir is not None and init.is_relative_to(editable_dir)):
            for commit in ((dist.read_text(COMMIT_RECORD) or "").strip(),
                           str(direct.get("vcs_info", {}).get("commit_id", ""))):
                if _SHA1.fullmatch(commit):
                    return commit
    src = init.parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == src:
        head = git("rev-parse", "HEAD")
        if _SHA1.fullmatch(head):
            return head
    return "unknown"


def run_detection(cfg: DetectionConfig, run_dir: str | os.PathLike, weights_pkl: str | os.PathLike,
                  num_gpus: int | None = None) -> dict:
    """Fine-tune and evaluate a detector from `weights_pkl` (a `save_detectron2` file).

    Spawns `num_gpus` processes (default `cfg.detection.gpus`) with `detectron2.engine.launch`
    in THIS process: call it from a job that is one task holding that many GPUs (one process on
    CPU). Detectron2 writes into run_dir/detectron2/ (checkpoints, metrics.json, log.txt); a
    requeued job resumes from its last checkpoint. Returns the parsed metrics (box_ap, box_ap50,
    box_ap75, mask_* when the detector has masks, ...) with iterations, wall time, the Detectron2
    version and commit, and the weight file with its sha256.
    """
    require_detectron2()
    from detectron2.engine import launch

    if cfg.task != "detection":
        raise ConfigError(f"task: run_detection runs detection tasks, got {cfg.task!r}")
    num_gpus = cfg.detection.gpus if num_gpus is None else num_gpus
    run_dir = Path(run_dir)
    output_dir = run_dir / "detectron2"
    output_dir.mkdir(parents=True, exist_ok=True)
    sources = dataset_sources(cfg, run_dir)
    d2cfg = detectron2_config(cfg, weights_pkl, output_dir, tuple(sources))
    atomic_write_text(output_dir / "overrides.json", json.dumps(d2cfg, indent=2))
    results_path = output_dir / RESULTS_FILE
    results_path.unlink(missing_ok=True)
    weights_sha256 = sha256(weights_pkl)  # the file Detectron2 loads below (provenance in final.json)
    t0 = time.time()
    runtime = importlib.import_module(RUNTIME_MODULE)
    # One process per GPU, spawned here; "auto" picks a free local port (one machine per job).
    launch(runtime.train_and_evaluate, num_gpus, num_machines=1, machine_rank=0, dist_url="auto",
           args=(d2cfg, sources))
    if not results_path.is_file():
        raise RuntimeError(f"Detectron2 finished without writing {results_path}: see {output_dir / 'log.txt'}")
    results = json.loads(results_path.read_text())
    return {**parse_metrics(results["evaluation"]), "iterations": results["iterations"],
            "detectron2_wall_s": time.time() - t0, "num_gpus": num_gpus, "detector": cfg.detection.detector,
            "schedule": cfg.detection.schedule, "dataset": cfg.detection.dataset, **detectron2_commit(),
            "weights": str(weights_pkl), "weights_sha256": weights_sha256}
