"""The Detectron2 side of detection transfer: imported only where Detectron2 is installed.

`repro.transfer.detectron2` builds the config as plain data and calls `train_and_evaluate` in
every process that `detectron2.engine.launch` starts. Importing this module registers our
backbone builders with Detectron2 (on import, SPEC §6, so any entry point that imports it can
build the model; LazyConfigs name `build_torchvision_resnet` by its import path instead).

The backbones exist for the CPU-scale profiles only: our pre-trained ResNets there are half
width with a 3x3 stride-1 stem (repro.backbones.resnet), which Detectron2's stock builder cannot
express. They are built from Detectron2's own blocks with the names `to_detectron2` writes, so the
same weight file loads. The paper profile uses Detectron2's stock R50-FPN builders.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_lvis_instances
from detectron2.data.datasets.lvis import get_lvis_instances_meta
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import COCOEvaluator, LVISEvaluator, inference_on_dataset
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.model_zoo import get_config_file
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
import fvcore.nn.weight_init as weight_init

from ..atomic import atomic_write_text
from .d2_names import RESULTS_FILE
from .metrics import lvis_numpy_guard

# --------------------------------------------------------------------------- backbones


class SmallStem(CNNBlockBase):
    """A 3x3 stride-1 conv + norm + ReLU, no max-pool: repro.backbones.resnet(small_stem=True).

    The conv is `conv1` with its norm as `conv1.norm`: the names of BasicStem, so the weights
    `to_detectron2` writes for the stem (stem.conv1.weight, stem.conv1.norm.*) load as they are.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x):
        return F.relu_(self.conv1(x))


def build_torchvision_resnet(*, depth: int, width: int = 64, small_stem: bool = False, norm: str = "BN",
                             out_features=("res2", "res3", "res4", "res5"), freeze_at: int = 0,
                             in_channels: int = 3) -> ResNet:
    """repro.backbones.resnet(arch, width, small_stem) as a Detectron2 ResNet.

    Stage i has width * 2**i planes (times 4 outputs for bottlenecks), like `_WidthResNet`; the
    stride sits on the 3x3 conv (torchvision's layout, STRIDE_IN_1X1 False).
    """
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    stem = (SmallStem if small_stem else BasicStem)(in_channels, width, norm)
    expansion = 1 if depth < 50 else 4
    stages, channels = [], width
    for i, n in enumerate(blocks):
        planes = width * 2 ** i
        kwargs = dict(block_class=BasicBlock if depth < 50 else BottleneckBlock, num_blocks=n,
                      stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1), in_channels=channels,
                      out_channels=planes * expansion, norm=norm)
        if depth >= 50:
            kwargs.update(bottleneck_channels=planes, stride_in_1x1=False)
        stages.append(ResNet.make_stage(**kwargs))
        channels = planes * expansion
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def _resnet_from_cfg(cfg, input_shape) -> ResNet:
    r = cfg.MODEL.RESNETS
    return build_torchvision_resnet(depth=r.DEPTH, width=r.STEM_OUT_CHANNELS, small_stem=r.SMALL_STEM, norm=r.NORM,
                                    out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
                                    in_channels=input_shape.channels)


@BACKBONE_REGISTRY.register()
def build_torchvision_resnet_fpn_backbone(cfg, input_shape):
    """build_resnet_fpn_backbone with our ResNet (R-CNNs: res2-res5, P6 by max-pool)."""
    f = cfg.MODEL.FPN
    bottom_up = _resnet_from_cfg(cfg, input_shape)
    top_block = LastLevelMaxPool()
    # P6 pools the last FPN level, named p<log2(stride)>: p5 after the standard stem, p3 after
    # the small one (stride 1 instead of 4).
    top_block.in_feature = f"p{int(math.log2(bottom_up.output_shape()[f.IN_FEATURES[-1]].stride))}"
    return FPN(bottom_up=bottom_up, in_features=f.IN_FEATURES, out_channels=f.OUT_CHANNELS,
               norm=f.NORM, top_block=top_block, fuse_type=f.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_torchvision_retinanet_resnet_fpn_backbone(cfg, input_shape):
    """build_retinanet_resnet_fpn_backbone with our ResNet (res3-res5, P6/P7 from res5)."""
    f = cfg.MODEL.FPN
    bottom_up = _resnet_from_cfg(cfg, input_shape)
    return FPN(bottom_up=bottom_up, in_features=f.IN_FEATURES, out_channels=f.OUT_CHANNELS, norm=f.NORM,
               top_block=LastLevelP6P7(bottom_up.output_shape()["res5"].channels, f.OUT_CHANNELS),
               fuse_type=f.FUSE_TYPE)


# --------------------------------------------------------------------------- datasets


def register_datasets(sources: dict[str, dict]) -> None:
    """Register each {name: {"format", "json", "images"}}; a name registered before is replaced
    (tests run several detections in one process)."""
    for name, src in sources.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if src["format"] == "coco":
            register_coco_instances(name, {}, src["json"], src["images"])
        else:
            register_lvis_instances(name, get_lvis_instances_meta("lvis_v0.5"), src["json"], src["images"])


def build_evaluator(dataset_name: str, output_dir: str, *, masks: bool, max_dets: int | None = None):
    """COCO or LVIS evaluation of boxes (and masks): tasks given, not inferred from the
    predictions, so a model without any detection still reports its mask AP (as NaN)."""
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    folder = os.path.join(output_dir, "inference")
    tasks = ("bbox", "segm") if masks else ("bbox",)
    if evaluator_type == "lvis":
        return LVISEvaluator(dataset_name, tasks=tasks, output_dir=folder, max_dets_per_image=max_dets)
    return COCOEvaluator(dataset_name, tasks=tasks, output_dir=folder)


def _evaluate(evaluate, dataset_names) -> dict:
    """Run `evaluate()`, guarding numpy 2 for lvis when an LVIS dataset is among the names."""
    lvis = any(MetadataCatalog.get(n).evaluator_type == "lvis" for n in dataset_names)
    if lvis:
        with lvis_numpy_guard():
            return evaluate()
    return evaluate()


class Trainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with an evaluator per dataset type and the LVIS guard."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        return build_evaluator(dataset_name, cfg.OUTPUT_DIR, masks=cfg.MODEL.MASK_ON,
                               max_dets=cfg.TEST.DETECTIONS_PER_IMAGE)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        return _evaluate(lambda: DefaultTrainer.test.__func__(cls, cfg, model, evaluators), cfg.DATASETS.TEST)


# --------------------------------------------------------------------------- one process


def yacs_config(d2cfg: dict) -> CfgNode:
    cfg = get_cfg()
    cfg.MODEL.RESNETS.SMALL_STEM = False  # our key (build_torchvision_*): declared before merging
    cfg.merge_from_file(get_config_file(d2cfg["base_config"]))
    # yacs checks each key exists and each type (lists become the tuples it declares).
    cfg.merge_from_list([item for key_value in d2cfg["overrides"].items() for item in key_value])
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.freeze()
    return cfg


def lazy_config(d2cfg: dict):
    from omegaconf import OmegaConf

    cfg = LazyConfig.load(get_config_file(d2cfg["base_config"]))
    for key, value in d2cfg["overrides"].items():
        # merge=False: a mapping replaces the node (e.g. the whole bottom-up ResNet), lists replace lists.
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    cfg.train.device = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


def _train_yacs(d2cfg: dict) -> tuple[dict, int]:
    """Detectron2's DefaultTrainer (tools/train_net.py); returns (evaluation, iterations done)."""
    cfg = yacs_config(d2cfg)
    if comm.is_main_process():
        atomic_write_text(Path(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
    seed_all_rng(cfg.SEED + comm.get_rank())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)  # the last checkpoint of this run, else MODEL.WEIGHTS
    trainer.train()
    return getattr(trainer, "_last_eval_results", None), trainer.iter


def _train_lazy(d2cfg: dict) -> tuple[dict, int]:
    """tools/lazyconfig_train_net.py's do_train, plus PreciseBN (train.precise_bn) and resume."""
    cfg = lazy_config(d2cfg)
    if comm.is_main_process():
        LazyConfig.save(cfg, os.path.join(cfg.train.output_dir, "config.yaml"))
    seed_all_rng(cfg.train.seed + comm.get_rank())
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    state: dict = {}

    def do_test():
        def evaluate():
            return inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
        state["results"] = _evaluate(evaluate, [cfg.dataloader.test.dataset.names])
        return state["results"]

    precise = cfg.train.get("precise_bn", {"enabled": False})
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        # Before the checkpointer and the evaluation: model_final and the test see precise statistics.
        hooks.PreciseBN(0, model, instantiate(cfg.dataloader.train), precise["num_iter"]) if precise["enabled"] else None,
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, do_test),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
    start_iter = trainer.iter + 1 if checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return state.get("results"), trainer.iter


def train_and_evaluate(d2cfg: dict, sources: dict[str, dict]) -> None:
    """The function every process runs (under detectron2.engine.launch). Rank 0 writes
    <output_dir>/results.json: {"evaluation": nested results, "iterations": int}."""
    output_dir = d2cfg["overrides"]["train.output_dir" if d2cfg["lazy"] else "OUTPUT_DIR"]
    setup_logger(output_dir, distributed_rank=comm.get_rank(), name="detectron2")  # log.txt there
    register_datasets(sources)
    results, last_iter = (_train_lazy if d2cfg["lazy"] else _train_yacs)(d2cfg)
    if comm.is_main_process():
        if not results:
            raise RuntimeError("Detectron2 trained but returned no evaluation results")
        payload = {"evaluation": _plain(results), "iterations": int(last_iter)}
        atomic_write_text(Path(output_dir, RESULTS_FILE), json.dumps(payload, indent=2))
    comm.synchronize()


def _plain(obj):
    """OrderedDicts / numpy scalars -> JSON-ready dicts and floats (NaN kept)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    try:
        return float(obj)
    except (TypeError, ValueError):
        return obj
