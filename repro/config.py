"""One config system: frozen dataclasses, one default per field, a strict YAML loader.

A run is fully described by a :class:`RunConfig`. Table files (``tables/*.yaml``) and
cluster profiles (``slurm/*.yaml``) are read with :func:`from_dict`, which fails on an
unknown key or a wrong type with the key's dotted path and what was expected.

Fields marked ``semantic=False`` (where the data lives, how many loader workers, how
often to log) do not change a run's result and do not enter its id. Fields added after run
ids were published (:func:`_added`) enter the id only when set to something other than their
default, which leaves behaviour unchanged: every earlier run keeps its id.

Each section of a RunConfig names the tasks that read it (``_section``); a run's id covers the
semantic fields of its task's sections (``TASK_SECTIONS``, derived from them), and a table that
sets a key its task does not read fails (:func:`check_task_keys`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .core import norms, schedules  # torch-free: importing the config does not import torch

# The teacher norms the core builds (core/model.py for BYOL-style runs, core/moco.py for MoCo),
# in that order, each once: the config takes its list from there.
TEACHER_NORMS = tuple(dict.fromkeys(norms.TEACHER_NORMS + norms.MOCO_TEACHER_NORMS))


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key and the fix."""


def _plain(default=dataclasses.MISSING, **kw):
    """A field that does not change the result (excluded from the run id)."""
    return field(default=default, metadata={"semantic": False}, **kw)


def _added(default, **kw):
    """A semantic field whose default is the behaviour before it existed: it enters the run
    id only when set otherwise, so published run ids stay valid."""
    return field(default=default, metadata={"semantic": "unless_default"}, **kw)


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["resnet18", "resnet50"] = "resnet18"
    width: int = 64  # channels of the first stage; 64 is torchvision's
    small_stem: bool = False  # 3x3 stride-1 stem, no max-pool (CPU-scale profiles only)
    hidden_dim: int | None = None  # None: the paper's (512 for ResNet-18, 4096 for ResNet-50)
    projection_dim: int | None = None  # None: the paper's (128 / 256)
    student_norm: Literal["bn", "syncbn"] = "bn"
    # The core's (TEACHER_NORMS); "shuffle" (shuffling BN) is MoCo's only (method.framework: moco).
    teacher_norm: Literal[TEACHER_NORMS] = "mbn"
    variance: Literal["reference", "biased"] = "reference"  # Momentum BN's variance, SPEC §1


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["digits", "mnist5k", "synthetic", "stl10", "imagenet"] = "digits"
    root: str | None = _plain(None)  # folder of stl10 / imagenet; unused for built-in data
    image_size: int = 16
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    augmentation: Literal["byol", "mocov2"] = "byol"  # SPEC §3 / MoCo v2's (both views alike)
    # Where the pre-training views are made: "per_image" (torchvision, one image at a time in the
    # loader, repro/data/augment.py) or "batched" (the whole batch at once on its device, per-image
    # parameters, repro/data/batched.py: equivalent in distribution, several times faster). The
    # views differ, so it enters the run id when batched.
    augmentation_mode: Literal["per_image", "batched"] = _added("per_image")
    workers: int = _plain(1)  # DataLoader workers per process


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["sgd", "lars"] = "sgd"
    lr_per_256: float = 0.1  # linear scaling: lr = lr_per_256 * global_batch_size / 256
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    warmup_epochs: float = 10.0
    warmup_start: Literal["reference", "paper"] = "paper"  # absolute 1e-6, or 0.001 x peak
    lars_trust: float = 0.001  # LARS trust coefficient (eta)
    # FIDELITY: the reference code applies weight decay to BN and bias (False); the paper
    # says they are excluded from it (True). Both exclude them from the LARS adaptation.
    lars_exclude_wd: bool = False
    # FIDELITY: which commit of the authors' LARS_SGD (repro/core/lars.py): "e17a948" (their
    # first commit, ||g|| + wd||w|| + 1e-8 in the denominator) or "head" (their released HEAD:
    # no 1e-8, trust 1 when ||w|| * ||g|| <= 1e-8).
    lars_rule: Literal["e17a948", "head"] = _added("e17a948")
    # Which LARS update (repro/core/lars.py): "reference" (the authors' LARS_SGD, lr inside the
    # momentum buffer) or "byol" (DeepMind BYOL's optax chain, lr outside it), for BYOL's recipe.
    lars_convention: Literal["reference", "byol"] = _added("reference")


@dataclass(frozen=True)
class MethodConfig:
    framework: Literal["byol", "moco"] = "byol"
    m_base: float = 0.01  # tau_k = 1 - m_base * (cos(pi k / K) + 1) / 2 (moco: constant 1 - m_base)
    # Section 4.2's equivalence rule: m_base is given for this global batch and scaled with
    # it (lr scales through optim.lr_per_256). None: m_base as given.
    m_base_batch: int | None = None
    alpha_base: float = 1.0  # alpha_k = alpha_base * (cos(pi k / K) + 1) / 2
    fixed_alpha: float | None = None  # Table 6 / MoCo: a constant alpha instead of the schedule
    queue_size: int = 65536  # moco: keys in the queue
    temperature: float = 0.2  # moco: InfoNCE temperature (MoCo v2)


def _pretrain_only(default, semantic: bool | str = True):
    """A field of ``train`` that only pre-training reads: fine-tuning and detection refuse it, and
    it enters no id of theirs."""
    return field(default=default, metadata={"semantic": semantic, "ignored_by": ("finetune", "detection")})


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = _pretrain_only(400.0)  # fine-tuning: finetune.epochs; detection: the schedule
    # Pre-training: samples per process = the batch a (non-synced) BN sees. Fine-tuning: the
    # micro-batch (what one forward pass and its BN see).
    bn_batch_size: int = field(default=32, metadata={"ignored_by": ("detection",)})
    # Pre-training processes: global batch = bn_batch_size * devices * world_size. Fine-tuning runs
    # one process; detection's GPUs are detection.gpus.
    world_size: int = _pretrain_only(1)
    # Emulated devices per process (repro/core/devices.py): each has its own bn_batch_size images,
    # and its own BN statistics and Momentum BN history, as one GPU of the paper's runs; Synced BN
    # spans all devices of all processes. 64 devices in 1 process reproduce Table 1's 64 GPUs' BN
    # statistics exactly (not their wall-clock time).
    devices: int = field(default=1, metadata={"semantic": "unless_default", "ignored_by": ("finetune", "detection")})
    max_steps: int | None = _pretrain_only(None)  # stop early (smoke profiles); the schedules still span all epochs
    seed: int = 0
    threads: int | None = _plain(None)  # torch threads per process; None: SLURM_CPUS_PER_TASK or 1
    # steps (pre-training, detection); fine-tuning checkpoints every epoch
    checkpoint_every: int = field(default=500, metadata={"semantic": False, "ignored_by": ("finetune",)})
    log_every: int = _pretrain_only(10, semantic=False)  # steps
    timing_warmup: int = _pretrain_only(10, semantic=False)  # steps left out of the seconds-per-iteration figure
    # Autocast of the forward passes: "bf16" or "fp16" (fp16 with a gradient scaler); Momentum
    # BN keeps float32 statistics either way. "fp64": weights, views and statistics in float64,
    # for exactness checks (two layouts of the same run agree to float64 round-off, which
    # training does not amplify to float32's scale in a few steps); the probe reads a float32
    # copy. It changes the numerics, so it enters the run id when not fp32.
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = _pretrain_only("fp32", semantic="unless_default")
    channels_last: bool = _pretrain_only(False, semantic=False)  # NHWC model and inputs (a speed option)
    compile: bool = _pretrain_only(False, semantic=False)  # torch.compile the student's forward (a speed option)

    @property
    def process_batch_size(self) -> int:
        """Images per process and step: its devices' batches together."""
        return self.bn_batch_size * self.devices

    @property
    def global_batch_size(self) -> int:
        return self.bn_batch_size * self.devices * self.world_size


@dataclass(frozen=True)
class ProbeConfig:
    linear_epochs: int = 80
    linear_lr_per_256: float = 0.5  # STL10 (SPEC §4); ImageNet uses 0.2
    linear_batch_size: int = 256
    # DEVIATION (CPU profiles): train the linear layer on fixed features of un-augmented
    # images; the paper's protocol (augment=True) recomputes features of augmented crops.
    augment: bool = True
    eval_every: int = 10  # epochs; the best of these is reported separately, marked "best"
    # FIDELITY: BYOL-style runs probe the teacher ("we dump the model from teacher", Sec. 3.4);
    # MoCo's protocol probes the query encoder (the student).
    encoder: Literal["teacher", "student"] = "teacher"
    knn_k: int = 20
    knn_temperature: float = 0.07
    # "paper": the SGD linear probe above, on the probe split. "cv" (reduced scales, SPEC §8):
    # probes that add no noise of their own, k-fold cross-validated over the whole labelled
    # set (every image a test image once): kNN, and multinomial logistic regression on
    # frozen standardised features fitted by L-BFGS (convex, deterministic).
    protocol: Literal["paper", "cv"] = _added("paper")
    cv_folds: int = _added(5)
    cv_max_iter: int = _added(1000)  # L-BFGS iterations of the logistic regression
    cv_l2: float = _added(1.0)  # inverse regularisation strength C of the logistic regression


@dataclass(frozen=True)
class PretrainedConfig:
    """Which pre-trained backbone a transfer run starts from (tasks finetune / detection).

    Either a pre-training run of this suite (table, profile, row, seed: its final
    checkpoint, resolved when the job starts) or an explicit checkpoint ``path``.
    """

    table: str | None = None
    profile: str | None = None
    row: str | None = None
    seed: int = 0
    path: str | None = None
    which: Literal["teacher", "student"] = "teacher"  # FIDELITY: the paper transfers the teacher


@dataclass(frozen=True)
class FinetuneConfig:
    """Semi-supervised fine-tuning of the whole network (Table 12, SPEC §4)."""

    percent: int = 1  # ImageNet: the SimCLR 1% / 10% split; built-in data: a deterministic split of it
    epochs: int = 20  # 20 for 1%, 15 for 10%
    batch_size: int = 1024
    lr: float = 0.08
    sgd_momentum: float = 0.9
    weight_decay: float = 0.0
    bn_reestimate_batches: int = 100  # BN statistics re-estimated after training (SPEC §4)


@dataclass(frozen=True)
class DetectionConfig:
    """Detectron2 fine-tuning (Tables 9-11, SPEC §4)."""

    detector: Literal["mask_rcnn", "cascade_mask_rcnn", "retinanet", "fcos"] = "mask_rcnn"
    schedule: Literal["1x", "2x"] = "1x"  # 90k (steps 60k, 80k) / 180k (120k, 160k) iterations at batch 16
    dataset: Literal["coco", "lvis_v0.5", "synthetic_coco", "synthetic_lvis"] = "coco"
    ims_per_batch: int = 16
    base_lr: float | None = None  # None: the detector's (0.02 R-CNNs, 0.01 RetinaNet / FCOS)
    max_iter: int | None = None  # None: the schedule's; set by small profiles
    eval_period: int = 0  # 0: evaluate once at the end
    gpus: int = 1  # processes Detectron2's launcher spawns inside the run's one task


TASKS = ("pretrain", "finetune", "detection")


def _section(cls, *tasks: str, plain_for: tuple[str, ...] = ()):
    """A section of :class:`RunConfig` and the tasks that read it. A run's id covers the semantic
    fields of the sections its task reads; ``plain_for``: tasks that read only the section's
    non-semantic fields (where the data lives, how many workers), which enter no id."""
    return field(default_factory=cls, metadata={"tasks": tasks, "plain_for": plain_for})


@dataclass(frozen=True)
class RunConfig:
    task: Literal[TASKS] = "pretrain"
    model: ModelConfig = _section(ModelConfig, "pretrain", "finetune", "detection")
    # Detection reads data.root (COCO / LVIS) and data.workers (Detectron2's loader) only.
    data: DataConfig = _section(DataConfig, "pretrain", "finetune", plain_for=("detection",))
    optim: OptimConfig = _section(OptimConfig, "pretrain")
    method: MethodConfig = _section(MethodConfig, "pretrain")
    train: TrainConfig = _section(TrainConfig, "pretrain", "finetune", "detection")
    probe: ProbeConfig = _section(ProbeConfig, "pretrain")
    pretrained: PretrainedConfig = _section(PretrainedConfig, "finetune", "detection")
    finetune: FinetuneConfig = _section(FinetuneConfig, "finetune")
    detection: DetectionConfig = _section(DetectionConfig, "detection")

    def _equivalent(self) -> tuple[float, float]:
        return schedules.equivalent_hparams(self.optim.lr_per_256, self.method.m_base,
                                            self.train.global_batch_size, self.method.m_base_batch)

    @property
    def peak_lr(self) -> float:
        """lr_per_256 * global batch / 256 (the linear scaling rule)."""
        return self._equivalent()[0]

    @property
    def m_base(self) -> float:
        """m_base after Section 4.2's equivalence rule (FIDELITY: the paper's, not the code's)."""
        return self._equivalent()[1]


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + ", ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_convert(v, arg, f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if isinstance(value, dict):
            return {_convert(k, key_tp, path): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"{where}: unknown key; valid keys here are {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def undot(flat: dict) -> dict:
    """{"model.teacher_norm": "mbn"} -> {"model": {"teacher_norm": "mbn"}}."""
    nested: dict = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is both a value and a mapping")
        node[parts[-1]] = value
    return nested


def semantic_dict(cfg) -> dict:
    """The fields that decide a run's result (nested), for its id."""
    out = {}
    for f in dataclasses.fields(cfg):
        semantic = f.metadata.get("semantic", True)
        if not semantic:
            continue
        v = getattr(cfg, f.name)
        if semantic == "unless_default" and v == f.default:
            continue
        out[f.name] = semantic_dict(v) if dataclasses.is_dataclass(v) else v
    return out


_SECTIONS = [f for f in dataclasses.fields(RunConfig) if "tasks" in f.metadata]
# The sections each task reads, from RunConfig's fields: the others do not enter its id.
TASK_SECTIONS = {task: ("task", *(f.name for f in _SECTIONS if task in f.metadata["tasks"])) for task in TASKS}


def _read_keys(section: dataclasses.Field, task: str) -> set[str] | None:
    """The keys of ``section`` that ``task`` reads: None for all of them."""
    fields = dataclasses.fields(typing.get_type_hints(RunConfig)[section.name])
    if task in section.metadata["tasks"]:
        ignored = {g.name for g in fields if task in g.metadata.get("ignored_by", ())}
        return {g.name for g in fields} - ignored if ignored else None
    if task not in section.metadata["plain_for"]:
        return set()
    return {g.name for g in fields if not g.metadata.get("semantic", True)}


def check_task_keys(nested: dict) -> None:
    """Refuse a key that the run's task does not read (ConfigError naming the key and the task).

    ``nested``: the config as a table sets it (nested mappings, before defaults)."""
    task = nested.get("task", "pretrain")
    if task not in TASKS:
        return  # from_dict names the bad task
    for f in _SECTIONS:
        keys, read = nested.get(f.name), _read_keys(f, task)
        if read is None or not isinstance(keys, dict):
            continue
        ignored = [k for k in keys if k not in read]
        if ignored:
            whole = [s for s in TASK_SECTIONS[task][1:] if s != f.name]
            reads = [*whole, *sorted(f"{f.name}.{k}" for k in read)]
            raise ConfigError(f"{f.name}.{ignored[0]}: task {task!r} does not read this key; "
                              f"it reads {', '.join(reads)}")


def task_view(nested: dict, task: str) -> dict:
    """``nested`` without the keys ``task`` does not read: what a transfer profile takes from a
    shared pre-training profile it extends (its own keys are checked by :func:`check_task_keys`)."""
    out = {}
    for key, value in nested.items():
        section = next((f for f in _SECTIONS if f.name == key), None)
        read = _read_keys(section, task) if section is not None and isinstance(value, dict) else None
        if read is None:
            out[key] = value
        elif read:
            kept = {k: v for k, v in value.items() if k in read}
            if kept:
                out[key] = kept
    return out


def run_semantics(cfg: RunConfig) -> dict:
    """The semantic fields ``cfg.task`` reads (what a run id covers): its sections, less the
    fields a section marks as ignored by the task."""
    full = semantic_dict(cfg)
    out = {k: v for k, v in full.items() if k in TASK_SECTIONS[cfg.task]}
    for f in _SECTIONS:
        read = _read_keys(f, cfg.task) if f.name in out else None
        if read is not None:
            out[f.name] = {k: v for k, v in out[f.name].items() if k in read}
    return out


def config_hash(cfg: RunConfig) -> str:
    blob = json.dumps(run_semantics(cfg), sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
