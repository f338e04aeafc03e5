"""The exported weights, proven by Detectron2's own loader and its own backbone (SPEC §4, §6).

A teacher (Momentum BN, whose history becomes BN running statistics) is exported by
`export_checkpoint` to the .pkl; for each detector's generated config (Mask R-CNN, Cascade and
RetinaNet through yacs, FCOS through its LazyConfig) the backbone that config builds loads the
file through Detectron2's `DetectionCheckpointer`, and:

- its incompatible-keys report (the checkpointer's return value, not its log) names no missing
  or unexpected backbone key and no wrong shape;
- on one image, the backbone's res2..res5 equal the torchvision ResNet's layer1..layer4 from the
  same teacher weights (exported as backbone_torchvision.pth), each side normalising the image
  its own way: Detectron2 reads it in the config's INPUT.FORMAT and applies the config's
  PIXEL_MEAN / PIXEL_STD (what its DatasetMapper and preprocess_image do); torchvision uses
  ToTensor + Normalize with ImageNet's mean / std.

So the renaming, STRIDE_IN_1X1 False, RGB order and pixel statistics are right by Detectron2's
own code: a stride on the 1x1 conv, BGR input or a dropped shortcut norm fails here. Tiny images
(64 x 64), eval mode, float64, only the backbone is built, one forward each: a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models.feature_extraction import create_feature_extractor

import needs
from repro.models.backbones import build_student_teacher, resnet
from repro.core.momentum_bn import momentum_bn_layers
from repro.grid import expand, load_table
from repro.transfer.detectron2 import detectron2_config
from repro.transfer.export import export_checkpoint

pytestmark = pytest.mark.detectron2
SIZE = 64
LEVELS = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}
# torchvision's ImageNet normalisation (its transforms' defaults for these weights), 0..1 units.
TV_MEAN, TV_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DETECTORS = [("t09", "mask-1x-ours-300"), ("t09", "cascade-1x-ours-300"), ("t10", "retinanet-1x-ours-300"),
             ("t10", "fcos-1x-ours-300")]


def _config(table, profile, row):
    return next(r for r in expand(load_table(table), profile) if r.row == row).config


@pytest.fixture(scope="module")
def d2():
    return needs.detectron2()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 64 x 64 RGB image on disk whose channels differ (so BGR and RGB read differently)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([4 * xx, 4 * yy, 2 * (xx + yy)], axis=-1) + rng.integers(0, 64, (SIZE, SIZE, 3))
    path = tmp_path_factory.mktemp("image") / "image.png"
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(path)
    return path


def _torchvision_input(path, dtype=torch.float32) -> torch.Tensor:
    """torchvision's ImageNet transform (ToTensor's scaling to 0..1, then Normalize), in `dtype`."""
    T = torchvision.transforms
    tf = T.Compose([T.PILToTensor(), T.ConvertImageDtype(dtype), T.Normalize(TV_MEAN, TV_STD)])
    return tf(Image.open(path).convert("RGB"))[None]


def _teacher_export(out_dir, image_path, *, arch, width, small_stem):
    """A pre-training checkpoint whose Momentum BN teacher has real statistics, exported."""
    torch.manual_seed(0)
    model = build_student_teacher(arch, width=width, small_stem=small_stem)
    teacher = model.teacher.encoder
    layers = list(momentum_bn_layers(teacher))
    assert layers, "the teacher should hold Momentum BN"
    with torch.no_grad():
        for bn in layers:  # affine parameters away from 1 / 0, so a swapped or missing one shows
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
        # One training-mode pass at alpha = 1: the history becomes these images' statistics
        # (so activations stay of order 1 through 50 layers), then eval mode reads it.
        x = _torchvision_input(image_path)
        batch = torch.cat([x, x.flip(-1), x.flip(-2), 0.5 * x + 0.1 * torch.randn_like(x)])
        teacher.train()
        teacher(batch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("student.encoder.")}
    checkpoint = out_dir / "checkpoint.pt"
    torch.save({"model": state}, checkpoint)
    return export_checkpoint(checkpoint, out_dir)


@pytest.fixture(scope="module")
def exported(d2, tmp_path_factory, image):
    """{profile: (torchvision .pth, detectron2 .pkl)}: the paper's R50 (width 64, 7x7 stem: Detectron2's
    stock builders) and the smoke profile's ResNet-18 (width 8, small stem: d2_runtime's builders)."""
    out = {}
    for profile in ("paper", "smoke"):
        m = _config("t09", profile, "mask-1x-ours-300").model
        out[profile] = _teacher_export(tmp_path_factory.mktemp(profile), image, arch=m.arch, width=m.width,
                                       small_stem=m.small_stem)
    return out


def _torchvision_features(cfg, weights_path, image_path) -> dict[str, torch.Tensor]:
    m = cfg.model
    if (m.arch, m.width, m.small_stem) == ("resnet50", 64, False):
        net = torchvision.models.resnet50()  # the paper's: torchvision's own ResNet-50
        net.fc = torch.nn.Identity()
    else:
        net = resnet(m.arch, width=m.width, small_stem=m.small_stem)  # a torchvision ResNet, narrower
    net.load_state_dict(torch.load(weights_path, weights_only=True), strict=True)
    net.eval().double()
    extractor = create_feature_extractor(net, return_nodes={tv: d2n for d2n, tv in LEVELS.items()})
    with torch.no_grad():
        return extractor(_torchvision_input(image_path, torch.float64))


def _detectron2_backbone(d2cfg):
    """(backbone, its bottom-up ResNet, image format, pixel mean, pixel std) as the generated config builds them."""
    from detectron2.config import instantiate
    from detectron2.modeling import build_backbone

    from repro.transfer import d2_runtime  # registers our builders (the CPU-scale profiles)

    if d2cfg["lazy"]:
        cfg = d2_runtime.lazy_config(d2cfg)
        backbone = instantiate(cfg.model.backbone)
        return (backbone, backbone.bottom_up, cfg.dataloader.test.mapper.image_format,
                list(cfg.model.pixel_mean), list(cfg.model.pixel_std))
    cfg = d2_runtime.yacs_config(d2cfg)
    backbone = build_backbone(cfg)
    return backbone, backbone.bottom_up, cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)


@pytest.mark.parametrize("profile", ["paper", "smoke"])
@pytest.mark.parametrize("table,row", DETECTORS, ids=[r.split("-")[0] for _, r in DETECTORS])
def test_detectron2_loads_the_export_and_computes_what_torchvision_does(exported, image, tmp_path, table, row,
                                                                          profile):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data.detection_utils import read_image

    cfg = _config(table, profile, row)
    tv_weights, d2_weights = exported[profile]
    d2cfg = detectron2_config(cfg, d2_weights, tmp_path / "detectron2", ("repro_train", "repro_test"))
    assert d2cfg["lazy"] == (cfg.detection.detector == "fcos")
    backbone, bottom_up, image_format, mean, std = _detectron2_backbone(d2cfg)

    # Detectron2's loader, with the heuristics our file asks for (matching_heuristics: True).
    checkpointer = DetectionCheckpointer(backbone)
    checkpoint = checkpointer._load_file(str(d2_weights))
    assert checkpoint["__author__"] != "Caffe2"  # read as a Detectron2 file, not renamed as Caffe2's
    incompatible = checkpointer._load_model(checkpoint)
    bottom_up_keys = {f"bottom_up.{k}" for k in bottom_up.state_dict()}
    missing = [k for k in incompatible.missing_keys if k in bottom_up_keys]
    assert not missing, f"{len(missing)} backbone weights missing from the file, e.g. {missing[:3]}"
    assert incompatible.unexpected_keys == [], f"keys of the file that fit no backbone weight: {incompatible.unexpected_keys[:3]}"
    assert not incompatible.incorrect_shapes
    # What is missing is the FPN's own layers, trained from scratch, and nothing else.
    assert all(k.startswith(("fpn_", "top_block.")) for k in incompatible.missing_keys), incompatible.missing_keys

    # One forward each, eval mode (BN from the teacher's exported running statistics).
    pixels = read_image(str(image), format=image_format)  # HWC, in the config's channel order
    # float64 on both sides, the normalisation included: what is left of a difference is the
    # weights' layout, not rounding (in float32 the inputs' last-bit differences grow to about
    # 1e-4 of the activations' scale at res5 through 50 random layers).
    x = torch.as_tensor(np.ascontiguousarray(pixels.transpose(2, 0, 1)), dtype=torch.float64)
    x = (x - torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)) / torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    backbone.eval().double()
    # RetinaNet / FCOS use res3..res5 only; the res2 stage exists in their ResNet all the same
    # (it feeds res3): ask the module that was built for every stage's output.
    bottom_up._out_features = list(LEVELS)
    with torch.no_grad():
        ours = bottom_up(x[None])
    theirs = _torchvision_features(cfg, tv_weights, image)
    for level in LEVELS:
        assert ours[level].shape == theirs[level].shape, level
        assert theirs[level].abs().max() > 0.1  # a live signal, not zeros
        torch.testing.assert_close(ours[level], theirs[level], rtol=1e-4, atol=1e-4,
                                   msg=lambda m, level=level: f"{level} vs torchvision's {LEVELS[level]}: {m}")


def test_the_config_under_test_is_the_papers():
    """The paper rows above exercise Detectron2's stock R50 builders (where STRIDE_IN_1X1 acts)."""
    for table, row in DETECTORS:
        m = _config(table, "paper", row).model
        assert (m.arch, m.width, m.small_stem) == ("resnet50", 64, False)
        d2cfg = detectron2_config(_config(table, "paper", row), "w.pkl", "out", ("a", "b"))
        o = d2cfg["overrides"]
        if d2cfg["lazy"]:
            assert o["model.backbone.bottom_up.stages.stride_in_1x1"] is False and "model.backbone.bottom_up" not in o
        else:
            assert o["MODEL.RESNETS.STRIDE_IN_1X1"] is False and "MODEL.BACKBONE.NAME" not in o

