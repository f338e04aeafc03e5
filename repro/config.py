"""One config system: frozen dataclasses, one default per field, a strict YAML loader.

Each task has its config, holding only the sections and fields that task reads:
:class:`PretrainConfig` (``task: pretrain``, the default), :class:`FinetuneConfig` and
:class:`DetectionConfig`; a run's config is one of them (:data:`RunConfig`). A field means one
thing: ``train.bn_batch_size`` is pre-training's per-device batch, and fine-tuning's micro-batch
is ``finetune.micro_batch_size``. Where a transfer task reads a field that pre-training also
reads (the ResNet's arch, the crop), its section takes pre-training's default. Every config says
how many processes the scheduler starts for its run (``processes``).

Table files (``tables/*.yaml``) and cluster profiles (``slurm/*.yaml``) are read with
:func:`load_config` and :func:`from_dict`, which fail on an unknown key or a wrong type with the
key's dotted path and what was expected; a key that another task reads fails naming the run's task
and what it reads.

Fields marked ``semantic=False`` (where the data lives, how many loader workers, how
often to log) do not change a run's result and do not enter its id. Fields added after run
ids were published (:func:`_added`) enter the id only when set to something other than their
default, which leaves behaviour unchanged: every earlier run keeps its id.
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
from typing import Any, ClassVar, Literal

import yaml

from .core import norms, schedules  # torch-free: importing the config does not import torch

# The teacher norms the core builds (core/model.py for BYOL-style runs, core/moco.py for MoCo),
# in that order, each once: the config takes its list from there.
TEACHER_NORMS = tuple(dict.fromkeys(norms.TEACHER_NORMS + norms.MOCO_TEACHER_NORMS))
ARCHS = ("resnet18", "resnet50")
DATASETS = ("digits", "mnist5k", "synthetic", "stl10", "imagenet")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key and the fix."""


def _plain(default=dataclasses.MISSING, **kw):
    """A field that does not change the result (excluded from the run id)."""
    return field(default=default, metadata={"semantic": False}, **kw)


def _added(default, **kw):
    """A semantic field whose default is the behaviour before it existed: it enters the run
    id only when set otherwise, so published run ids stay valid."""
    return field(default=default, metadata={"semantic": "unless_default"}, **kw)


# --------------------------------------------------------------------------- pre-training's sections


@dataclass(frozen=True)
class ModelSection:
    arch: Literal[ARCHS] = "resnet18"
    width: int = 64  # channels of the first stage; 64 is torchvision's
    small_stem: bool = False  # 3x3 stride-1 stem, no max-pool (CPU-scale profiles only)
    hidden_dim: int | None = None  # None: the paper's (512 for ResNet-18, 4096 for ResNet-50)
    projection_dim: int | None = None  # None: the paper's (128 / 256)
    student_norm: Literal["bn", "syncbn"] = "bn"
    # The core's (TEACHER_NORMS); "shuffle" (shuffling BN) is MoCo's only (method.framework: moco).
    teacher_norm: Literal[TEACHER_NORMS] = "mbn"
    variance: Literal["reference", "biased"] = "reference"  # Momentum BN's variance, SPEC §1


@dataclass(frozen=True)
class DataSection:
    dataset: Literal[DATASETS] = "digits"
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
class OptimSection:
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
class MethodSection:
    framework: Literal["byol", "moco"] = "byol"
    m_base: float = 0.01  # tau_k = 1 - m_base * (cos(pi k / K) + 1) / 2 (moco: constant 1 - m_base)
    # Section 4.2's equivalence rule: m_base is given for this global batch and scaled with
    # it (lr scales through optim.lr_per_256). None: m_base as given.
    m_base_batch: int | None = None
    alpha_base: float = 1.0  # alpha_k = alpha_base * (cos(pi k / K) + 1) / 2
    fixed_alpha: float | None = None  # Table 6 / MoCo: a constant alpha instead of the schedule
    queue_size: int = 65536  # moco: keys in the queue
    temperature: float = 0.2  # moco: InfoNCE temperature (MoCo v2)


@dataclass(frozen=True)
class TrainSection:
    epochs: float = 400.0
    bn_batch_size: int = 32  # samples per device = the batch a (non-synced) BN sees
    # Processes: global batch = bn_batch_size * devices * world_size.
    world_size: int = 1
    # Emulated devices per process (repro/core/devices.py): each has its own bn_batch_size images,
    # and its own BN statistics and Momentum BN history, as one GPU of the paper's runs; Synced BN
    # spans all devices of all processes. 64 devices in 1 process reproduce Table 1's 64 GPUs' BN
    # statistics exactly (not their wall-clock time).
    devices: int = _added(1)
    max_steps: int | None = None  # stop early (smoke profiles); the schedules still span all epochs
    seed: int = 0
    threads: int | None = _plain(None)  # torch threads per process; None: SLURM_CPUS_PER_TASK or 1
    checkpoint_every: int = _plain(500)  # steps
    log_every: int = _plain(10)  # steps
    timing_warmup: int = _plain(10)  # steps left out of the seconds-per-iteration figure
    # Autocast of the forward passes: "bf16" or "fp16" (fp16 with a gradient scaler); Momentum
    # BN keeps float32 statistics either way. "fp64": weights, views and statistics in float64,
    # for exactness checks (two layouts of the same run agree to float64 round-off, which
    # training does not amplify to float32's scale in a few steps); the probe reads a float32
    # copy. It changes the numerics, so it enters the run id when not fp32.
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = _added("fp32")
    channels_last: bool = _plain(False)  # NHWC model and inputs (a speed option)
    compile: bool = _plain(False)  # torch.compile the student's forward (a speed option)

    @property
    def process_batch_size(self) -> int:
        """Images per process and step: its devices' batches together."""
        return self.bn_batch_size * self.devices

    @property
    def global_batch_size(self) -> int:
        return self.bn_batch_size * self.devices * self.world_size


@dataclass(frozen=True)
class ProbeSection:
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


# --------------------------------------------------------------------------- transfer's sections


@dataclass(frozen=True)
class BackboneSection:
    """``model`` of a transfer run: the fields of :class:`ModelSection` that fix the ResNet the
    pre-trained weights load into (the heads and norms of pre-training are left behind)."""

    arch: Literal[ARCHS] = ModelSection.arch
    width: int = ModelSection.width
    small_stem: bool = ModelSection.small_stem


@dataclass(frozen=True)
class PretrainedSection:
    """Which pre-trained backbone a transfer run starts from.

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
class FinetuneDataSection:
    """``data`` of a fine-tuning run: the labelled images, with :class:`DataSection`'s fields but the
    two-view augmentation (fine-tuning crops and flips one view, repro/train/finetune.py)."""

    dataset: Literal[DATASETS] = DataSection.dataset
    root: str | None = _plain(DataSection.root)
    image_size: int = DataSection.image_size
    crop_scale: tuple[float, float] = DataSection.crop_scale
    hflip: bool = DataSection.hflip
    workers: int = _plain(DataSection.workers)


@dataclass(frozen=True)
class FinetuneTrainSection:
    seed: int = TrainSection.seed  # the head's initialisation, the order of the epochs, the crops
    threads: int | None = _plain(TrainSection.threads)  # the launcher's share of the cores (local runs)


@dataclass(frozen=True)
class FinetuneSection:
    """Semi-supervised fine-tuning of the whole network (Table 12, SPEC §4)."""

    percent: int = 1  # ImageNet: the SimCLR 1% / 10% split; built-in data: a deterministic split of it
    epochs: int = 20  # 20 for 1%, 15 for 10%
    batch_size: int = 1024  # images per optimizer step
    # Images per forward pass, what each BN sees: a step accumulates batch_size / micro_batch_size
    # of them in one process (the paper's 8 GPUs x 128: 128).
    micro_batch_size: int = 32
    lr: float = 0.08
    sgd_momentum: float = 0.9
    weight_decay: float = 0.0
    bn_reestimate_batches: int = 100  # BN statistics re-estimated after training (SPEC §4)


@dataclass(frozen=True)
class DetectionDataSection:
    """``data`` of a detection run: where Detectron2's datasets are, not which (``detection.dataset``)."""

    root: str | None = _plain(DataSection.root)  # holds coco/, lvis/; None: $DETECTRON2_DATASETS or datasets/
    workers: int = _plain(DataSection.workers)  # Detectron2's loader workers


@dataclass(frozen=True)
class DetectionTrainSection:
    seed: int = TrainSection.seed  # Detectron2's SEED
    threads: int | None = _plain(TrainSection.threads)  # the launcher's share of the cores (local runs)
    checkpoint_every: int = _plain(TrainSection.checkpoint_every)  # iterations


@dataclass(frozen=True)
class DetectionSection:
    """Detectron2 fine-tuning (Tables 9-11, SPEC §4)."""

    detector: Literal["mask_rcnn", "cascade_mask_rcnn", "retinanet", "fcos"] = "mask_rcnn"
    schedule: Literal["1x", "2x"] = "1x"  # 90k (steps 60k, 80k) / 180k (120k, 160k) iterations at batch 16
    dataset: Literal["coco", "lvis_v0.5", "synthetic_coco", "synthetic_lvis"] = "coco"
    ims_per_batch: int = 16
    base_lr: float | None = None  # None: the detector's (0.02 R-CNNs, 0.01 RetinaNet / FCOS)
    max_iter: int | None = None  # None: the schedule's; set by small profiles
    eval_period: int = 0  # 0: evaluate once at the end
    gpus: int = 1  # processes Detectron2's launcher spawns inside the run's one task


# --------------------------------------------------------------------------- one config per task


@dataclass(frozen=True)
class PretrainConfig:
    """A pre-training run and its probes (Tables 1-8)."""

    task: Literal["pretrain"] = "pretrain"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainSection = field(default_factory=TrainSection)
    probe: ProbeSection = field(default_factory=ProbeSection)

    @property
    def processes(self) -> int:
        """Processes the scheduler starts for the run: one per rank."""
        return self.train.world_size

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


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run (Table 12): a pre-trained backbone and a linear head, trained on labels."""

    task: Literal["finetune"] = "finetune"
    model: BackboneSection = field(default_factory=BackboneSection)
    data: FinetuneDataSection = field(default_factory=FinetuneDataSection)
    train: FinetuneTrainSection = field(default_factory=FinetuneTrainSection)
    pretrained: PretrainedSection = field(default_factory=PretrainedSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)

    processes: ClassVar[int] = 1  # micro-batches stand for the paper's 8 GPUs (finetune.micro_batch_size)


@dataclass(frozen=True)
class DetectionConfig:
    """A detection run (Tables 9-11): a pre-trained backbone fine-tuned by Detectron2."""

    task: Literal["detection"] = "detection"
    model: BackboneSection = field(default_factory=BackboneSection)
    data: DetectionDataSection = field(default_factory=DetectionDataSection)
    train: DetectionTrainSection = field(default_factory=DetectionTrainSection)
    pretrained: PretrainedSection = field(default_factory=PretrainedSection)
    detection: DetectionSection = field(default_factory=DetectionSection)

    processes: ClassVar[int] = 1  # Detectron2's launcher spawns detection.gpus processes inside it


RunConfig = PretrainConfig | FinetuneConfig | DetectionConfig
TASK_CONFIGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "detection": DetectionConfig}
TASKS = tuple(TASK_CONFIGS)


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


def _fields(cls) -> dict[str, Any]:
    """The fields of dataclass ``cls`` by name, with their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _first_key(value: Any, path: str) -> str:
    """``path``, or the dotted path of the first value set under it (``optim`` -> ``optim.lr_per_256``)."""
    while isinstance(value, dict) and value:
        key, value = next(iter(value.items()))
        path = f"{path}.{key}"
    return path


def _unread_key(cls, data: dict, path: str = "") -> str | None:
    """The dotted path of the first key of ``data`` that dataclass ``cls`` has no field for."""
    fields = _fields(cls)
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            return _first_key(value, where)
        if dataclasses.is_dataclass(fields[key]) and isinstance(value, dict):
            inner = _unread_key(fields[key], value, where)
            if inner is not None:
                return inner
    return None


def has_key(cls, dotted: str) -> bool:
    """Whether dataclass ``cls`` has the field ``dotted`` (``train.world_size``)."""
    for part in dotted.split("."):
        fields = _fields(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return False
        cls = fields[part]
    return True


def _reads(cls, key: str) -> str:
    """What a task's config ``cls`` reads, for an error about ``key``: its sections, the one of
    ``key`` field by field."""
    section = key.split(".")[0]
    reads = []
    for name, tp in _fields(cls).items():
        if name == section and dataclasses.is_dataclass(tp):
            reads += [f"{name}.{sub}" for sub in _fields(tp)]
        elif name != "task":
            reads.append(name)
    return ", ".join(reads)


# Keys a task used to read under another task's name (before each task had its config).
MOVED = {("finetune", "train.bn_batch_size"): "finetune.micro_batch_size"}


def load_config(data: dict) -> RunConfig:
    """The config of a run from nested mappings (a table's settings, a saved config): the config of
    its ``task`` (default ``pretrain``). A key that the task's config has no field for fails (a
    ConfigError naming the key): one that another task reads names the task and what it reads."""
    task = data.get("task", "pretrain")
    if not isinstance(task, str) or task not in TASK_CONFIGS:
        raise ConfigError(f"task: expected one of {', '.join(repr(t) for t in TASKS)}, got {task!r}")
    cls = TASK_CONFIGS[task]
    unread = _unread_key(cls, data)
    readers = [t for t, other in TASK_CONFIGS.items() if unread is not None and has_key(other, unread)]
    if readers:
        moved = MOVED.get((task, unread))
        raise ConfigError(f"{unread}: task {task!r} does not read this key (read by {', '.join(readers)}); "
                          + (f"its own is {moved}; " if moved else "") + f"it reads {_reads(cls, unread)}")
    return from_dict(cls, data)


def _only_fields(cls, data: dict) -> dict:
    out = {}
    fields = _fields(cls)
    for key, value in data.items():
        if key not in fields:
            continue
        if dataclasses.is_dataclass(fields[key]) and isinstance(value, dict):
            value = _only_fields(fields[key], value)
            if not value:
                continue
        out[key] = value
    return out


def task_view(data: dict, task: str) -> dict:
    """``data`` (nested mappings) without the keys that ``task``'s config has no field for: what a
    transfer profile takes from a shared pre-training profile it extends, and what a config.yaml
    saved before each task had its own config (it held every task's sections) says of its run."""
    return _only_fields(TASK_CONFIGS[task], data) if task in TASK_CONFIGS else data


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


def config_hash(cfg: RunConfig) -> str:
    """The hash in a run's id: of its config's semantic fields. A pre-training's are the ones its id
    hashed when one config held every task's sections, so no pre-training id changed; fine-tuning
    and detection ids did (they hash their own sections now)."""
    blob = json.dumps(semantic_dict(cfg), sort_keys=True, separators=(",", ":"), default=list)
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
