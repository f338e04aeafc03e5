"""torchvision ResNets as encoders (never forked: only stem and width adjusted), and
the student-teacher model built on them.

The classification layer is replaced by ``nn.Identity`` so the encoder returns the pooled
feature (512-d for ResNet-18, 2048-d for ResNet-50 at the standard width). All norm layers
are plain ``nn.BatchNorm2d`` here; the model swaps them per network (student / teacher)
with the conversion functions of :mod:`momentum_bn` and :mod:`sync_bn`.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..core.heads import mlp_head
from ..core.model import HEAD_SIZES, StudentTeacher
from ..core.moco import MoCo, moco_head

ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}


class _WidthResNet(ResNet):
    """torchvision's ResNet with every stage's width scaled by ``width / 64``.

    Only ``_make_layer`` is overridden; the blocks, init and forward are torchvision's.
    """

    def __init__(self, block, layers, width: int):
        self._width = width
        super().__init__(block, layers)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # first stage: the stem will have `width` channels (see resnet())
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


def resnet(arch: str, *, width: int = 64, small_stem: bool = False) -> nn.Module:
    """A torchvision ResNet encoder; ``out_dim`` holds its feature size.

    width: channels of the first stage (64 is torchvision's; SPEC §7's CPU runs use 32).
    small_stem: a 3x3 stride-1 first conv and no max-pool, for 16-32 px inputs.
    DEVIATION: the paper uses the standard stem (96 px STL10, 224 px ImageNet); the small
    stem is for the CPU-scale profiles only.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    block, layers = ARCHS[arch]
    model = _WidthResNet(block, layers, width) if width != 64 else ResNet(block, layers)
    if width != 64 or small_stem:
        kernel, stride, padding = (3, 1, 1) if small_stem else (7, 2, 3)
        model.conv1 = nn.Conv2d(3, width, kernel, stride, padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.bn1 = nn.BatchNorm2d(width)
    if small_stem:
        model.maxpool = nn.Identity()
    model.out_dim = model.fc.in_features * width // 64
    model.fc = nn.Identity()
    return model


def build_student_teacher(
    arch: str = "resnet18",
    *,
    student_norm: str = "bn",
    teacher_norm: str = "mbn",
    variance: str = "reference",
    width: int = 64,
    small_stem: bool = False,
    hidden_dim: int | None = None,
    projection_dim: int | None = None,
    devices: int = 1,
) -> StudentTeacher:
    """A ResNet student-teacher pair with the paper's head sizes unless given; ``devices``
    emulated devices per process (``repro.core.devices``)."""
    encoder = resnet(arch, width=width, small_stem=small_stem)
    default_hidden, default_out = HEAD_SIZES[arch]
    hidden = hidden_dim or default_hidden
    out = projection_dim or default_out
    return StudentTeacher(
        encoder,
        mlp_head(encoder.out_dim, hidden, out),
        mlp_head(out, hidden, out),
        student_norm=student_norm,
        teacher_norm=teacher_norm,
        variance=variance,
        devices=devices,
    )


def build_moco(
    arch: str = "resnet50",
    *,
    teacher_norm: str = "shuffle",
    variance: str = "reference",
    width: int = 64,
    small_stem: bool = False,
    hidden_dim: int | None = None,
    projection_dim: int | None = None,
    queue_size: int = 65536,
    temperature: float = 0.2,
    seed: int = 0,
) -> MoCo:
    """MoCo v2 (Table 3): MLP head d -> d -> 128 (MoCo v2's), the key encoder's norm per Table 3."""
    encoder = resnet(arch, width=width, small_stem=small_stem)
    head = moco_head(encoder.out_dim, hidden_dim or encoder.out_dim, projection_dim or 128)
    return MoCo(encoder, head, teacher_norm=teacher_norm, queue_size=queue_size, temperature=temperature,
                variance=variance, shuffle_seed=seed)


def model_from_config(cfg) -> StudentTeacher | MoCo:
    """The model of a ``PretrainConfig``: the config stops here; the objects take explicit arguments."""
    m = cfg.model
    common = dict(teacher_norm=m.teacher_norm, variance=m.variance, width=m.width, small_stem=m.small_stem,
                  hidden_dim=m.hidden_dim, projection_dim=m.projection_dim)
    if cfg.method.framework == "moco":
        if cfg.train.devices > 1:
            raise ValueError("MoCo's shuffling BN across emulated devices is not built: set train.devices: 1 "
                             "for method.framework: moco (one process per GPU)")
        if m.student_norm != "bn":
            raise ValueError("MoCo's query encoder uses plain BN here (model.student_norm: bn)")
        return build_moco(m.arch, queue_size=cfg.method.queue_size, temperature=cfg.method.temperature,
                          seed=cfg.train.seed, **common)
    if m.teacher_norm == "shuffle":
        raise ValueError("model.teacher_norm: shuffle is MoCo's shuffling BN: set method.framework: moco")
    return build_student_teacher(m.arch, student_norm=m.student_norm, devices=cfg.train.devices, **common)
