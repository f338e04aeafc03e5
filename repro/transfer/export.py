"""Export a pre-trained backbone for transfer (SPEC section 4, "Detection" and "Semi-supervised").

A pre-training checkpoint is a dict whose "model" entry is the student-teacher model's state dict:
the student backbone under `student.encoder.`, the teacher's under `teacher.encoder.`, the heads
under `student.projector.`, `student.predictor.` and `teacher.projector.`. From it we write

- `backbone_torchvision.pth`: a plain torchvision ResNet state dict without `fc`, loadable with
  `resnet50(); model.fc = nn.Identity(); model.load_state_dict(sd)` (semi-supervised fine-tuning,
  linear probe, anything torchvision-based);
- `backbone_detectron2.pkl`: the same weights renamed for detectron2's ResNet.

FIDELITY: the paper transfers the teacher (the linear probe and detection use the teacher's
backbone with its Momentum BN history as running statistics), hence `which="teacher"` by default.

The detectron2 file holds torchvision-layout weights, so the detectron2 config must match them or
about 1 AP is lost (SPEC section 6): INPUT.FORMAT "RGB", PIXEL_MEAN [123.675, 116.28, 103.53],
PIXEL_STD [58.395, 57.12, 57.375], RESNETS.STRIDE_IN_1X1 False, BACKBONE.FREEZE_AT 0.

Run as a script: `python -m repro.transfer.export CHECKPOINT OUT_DIR [--which student]`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write

TORCHVISION_FILENAME = "backbone_torchvision.pth"
DETECTRON2_FILENAME = "backbone_detectron2.pkl"

# Every key of a torchvision ResNet (convs without bias, BatchNorm2d) ends in one of these.
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")
_STANDARD_LEAVES = (*_BN_LEAVES, "num_batches_tracked")

# torchvision ResNet key grammar: the stem (conv1, bn1) and blocks layer<stage>.<block>.<module>.
_STEM_KEY = re.compile(r"(?P<module>conv1|bn1)\.(?P<leaf>\w+)")
_BLOCK_KEY = re.compile(
    r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<module>conv[1-3]|bn[1-3]|downsample\.[01])"
    r"\.(?P<leaf>\w+)"
)


def backbone_state_dict(
    checkpoint_state: Mapping[str, torch.Tensor], which: str = "teacher"
) -> dict[str, torch.Tensor]:
    """The `which` ("teacher" or "student") backbone of a pre-training state, torchvision-named.

    Strips the `<which>.encoder.` prefix and drops the heads, `fc.*` and every buffer whose name is
    not a standard BatchNorm / conv key (our Momentum BN layers also carry `alpha` and the pending
    per-view statistics `pending_*`; its history already lives in `running_mean`/`running_var`,
    which is exactly what torchvision's BatchNorm2d reads in eval mode, SPEC section 1).
    The result loads strictly into a torchvision ResNet whose `fc` is `nn.Identity()`.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    prefix = f"{which}.encoder."
    backbone: dict[str, torch.Tensor] = {}
    for key, value in checkpoint_state.items():
        # A state dict taken from the DistributedDataParallel wrapper instead of its .module.
        key = key.removeprefix("module.")
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("fc."):
            continue  # the encoder's classifier slot (Identity in pre-training; never transferred)
        if name.rsplit(".", 1)[-1] not in _STANDARD_LEAVES:
            continue  # Momentum BN extras (alpha, pending_*): training-time state only
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key}: expected a tensor, got {type(value).__name__}")
        backbone[name] = value
    if not backbone:
        found = sorted(
            {".".join(k.removeprefix("module.").split(".")[:2]) for k in checkpoint_state}
        )
        raise ValueError(
            f"no keys with prefix {prefix!r} in the checkpoint's model state "
            f"(prefixes found: {', '.join(found[:8]) or 'none'})"
        )
    # torchvision's BatchNorm2d has a num_batches_tracked buffer; torch fills a missing one only
    # for state dicts without version metadata, so a norm layer without one (a Momentum BN that
    # does not count batches) gets an explicit 0. It is only read when BatchNorm's momentum is
    # None, which torchvision's ResNet never uses.
    for name in [n for n in backbone if n.endswith(".running_mean")]:
        counter = name.removesuffix("running_mean") + "num_batches_tracked"
        backbone.setdefault(counter, torch.zeros((), dtype=torch.long))
    return backbone


def _detectron2_name(name: str) -> str | None:
    """detectron2's name for one torchvision ResNet key; None for keys detectron2 does not take."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked" or name.startswith("fc."):
        # detectron2's norms never read the counter (fixed BN momentum) and its backbone has no
        # classifier; dropping fc also lets a full torchvision classifier (supervised baseline) in.
        return None
    if m := _STEM_KEY.fullmatch(name):
        module = "stem.conv1" if m["module"] == "conv1" else "stem.conv1.norm"
    elif m := _BLOCK_KEY.fullmatch(name):
        stage = f"res{int(m['stage']) + 1}.{m['block']}"  # layer1 is detectron2's res2
        part = m["module"]
        if part.startswith("bn"):
            part = f"conv{part[2:]}.norm"
        elif part == "downsample.0":
            part = "shortcut"
        elif part == "downsample.1":
            part = "shortcut.norm"
        module = f"{stage}.{part}"
    else:
        raise ValueError(f"not a torchvision ResNet backbone key: {name!r}")
    is_norm = module.endswith("norm")
    if (is_norm and m["leaf"] not in _BN_LEAVES) or (not is_norm and m["leaf"] != "weight"):
        raise ValueError(f"not a torchvision ResNet backbone key: {name!r}")
    return f"{module}.{m['leaf']}"


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # numpy has no bfloat16
    return tensor.numpy()


def to_detectron2(torchvision_state_dict: Mapping[str, torch.Tensor]) -> dict:
    """A torchvision ResNet state dict as a detectron2 weight dict (SPEC section 4, Detection).

    FIDELITY: the renaming of detectron2's tools/convert-torchvision-to-d2.py: conv1/bn1 ->
    stem.conv1 / stem.conv1.norm, layerN -> res(N+1), bnK -> convK.norm, downsample.0/.1 ->
    shortcut / shortcut.norm. DEVIATION: that script keeps num_batches_tracked and fc (unused by
    detectron2); we drop them and refuse any key outside a torchvision ResNet instead of passing
    it through under a made-up name.
    """
    model: dict[str, np.ndarray] = {}
    dropped = 0
    for name, value in torchvision_state_dict.items():
        d2_name = _detectron2_name(name)
        if d2_name is None:
            dropped += 1
            continue
        if d2_name in model:
            raise AssertionError(f"two backbone keys map to detectron2 name {d2_name!r}")
        model[d2_name] = _to_numpy(value)
    if len(model) + dropped != len(torchvision_state_dict):
        raise AssertionError("a backbone key was not mapped exactly once")
    return {
        "model": model,
        # Why "__author__" matters: detectron2's DetectionCheckpointer treats a .pkl without it
        # (and "model") as Caffe2 weights and runs its Caffe2 renaming over the names, which
        # mangles ours. With it, and matching_heuristics=True, detectron2 loads the arrays as
        # they are and matches names by suffix. (SPEC section 4.)
        "__author__": "repro-momentum2",
        "matching_heuristics": True,
    }


def save_detectron2(state: Mapping, path: str | os.PathLike) -> Path:
    """Pickle a `to_detectron2` dict to `path` atomically; returns the path.

    detectron2 reads a weight file as a pickle only when its name ends in `.pkl` (anything else is
    handed to torch.load), hence the check.
    """
    path = Path(path)
    if path.suffix != ".pkl":
        raise ValueError(f"{path}: detectron2 weight files must end in .pkl")
    if "model" not in state or "__author__" not in state:
        raise ValueError("state must be a to_detectron2() dict with 'model' and '__author__'")
    atomic_write(path, lambda f: pickle.dump(dict(state), f, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def _describe(error: BaseException) -> str:
    """One line saying why torch.load failed (its messages run over several lines)."""
    text = str(error)
    # torch's weights-only failures put the useful part (e.g. "Unsupported global: ...", for a
    # checkpoint that pickled a config object) after a generic preamble.
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[0] if lines else "no details"
    return f"{type(error).__name__}: {detail[:200]}"


def export_checkpoint(
    checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike, which: str = "teacher"
) -> tuple[Path, Path]:
    """Write `which`'s backbone from a pre-training checkpoint in torchvision and detectron2 form.

    Returns (out_dir/backbone_torchvision.pth, out_dir/backbone_detectron2.pkl). A file that is
    not a weights-only torch checkpoint holding {"model": state_dict} raises ValueError naming it.
    """
    checkpoint_path = Path(checkpoint_path)
    try:
        # weights_only=True: the default since torch 2.6 and what our checkpoints are built for
        # (only tensors, numbers, strings and plain containers, SPEC section 6).
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(
            f"{checkpoint_path}: not a readable weights-only torch checkpoint ({_describe(error)})"
        ) from error
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        got = (
            f"keys {sorted(map(str, checkpoint))[:8]}"
            if isinstance(checkpoint, Mapping)
            else type(checkpoint).__name__
        )
        raise ValueError(
            f"{checkpoint_path}: expected a dict with key 'model' holding the state dict, got {got}"
        )
    try:
        backbone = backbone_state_dict(checkpoint["model"], which=which)
        detectron2_state = to_detectron2(backbone)
    except ValueError as error:
        raise ValueError(f"{checkpoint_path}: {error}") from error

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torchvision_path = out_dir / TORCHVISION_FILENAME
    atomic_write(torchvision_path, lambda f: torch.save(backbone, f))
    detectron2_path = save_detectron2(detectron2_state, out_dir / DETECTRON2_FILENAME)
    return torchvision_path, detectron2_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("checkpoint", help="pre-training checkpoint (.pth with a 'model' entry)")
    parser.add_argument("out_dir", help="directory for the exported backbone files")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher")
    args = parser.parse_args(argv)
    for path in export_checkpoint(args.checkpoint, args.out_dir, which=args.which):
        print(path)


if __name__ == "__main__":
    main()
