"""Two-view augmentation of a whole batch at once, per-sample parameters, on the batch's device.

The per-image pipelines of ``augment.py`` (torchvision v2, one image at a time) cost about half
of a CPU-scale step and cannot feed a GPU holding Table 1's 64 devices (4,096 views a step). This
module applies the same pipelines (SPEC §3: BYOL's, and MoCo v2's) to a uint8 batch in one
pass per operation, each image with its own random parameters:

* parameters are drawn exactly as torchvision draws them (the crop's 10 tries of scale and
  log-ratio with its central fallback, the jitter's factors and random order, blur sigma, the
  probabilities), from uniforms that are a pure function of (seed, epoch, image index, view):
  the views of a step depend only on the run's seed, the step and the images, never on the
  batch they sit in, the device split or a generator's state, so a resumed run is exact and two
  rows with the same seed see the same views;
* the operations are torchvision's formulas on per-sample factors, and like torchvision's uint8
  kernels (and the reference code's PIL) every colour operation returns whole grey levels.

Where it differs from the per-image pipeline (measured in ``tests/data/test_batched.py``):

* crop and resize (:func:`resized_crops`): every crop of the batch in one ``grid_sample``,
  torchvision's bilinear resize exactly (to rounding) when no crop is larger than the output
  (every crop at the CPU scales and at STL10's 96 px); a larger crop (a downscale) goes through
  ``roi_align``. DEVIATION: a downscale's filter differs slightly from the antialiased resize.
* hue: kornia's HSV conversion (``kornia.color``), hue shifted by the same factor as
  torchvision's (a fraction of the colour wheel); the result is rounded to whole grey levels.
* blur: ``kornia.filters.gaussian_blur2d`` with one sigma per image (reflect padding, the same
  kernel size as the per-image pipeline), rounded as torchvision rounds a uint8 blur.
* images must share one size (a batch): datasets of mixed sizes (an ImageNet folder) keep the
  per-image pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.data
from torchvision.ops import roi_align

from .augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size, derive_seed

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range (torchvision's, BYOL's)
TRIES = 10  # torchvision's RandomResizedCrop tries 10 boxes before its central fallback
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")

# The uniforms one view of one image draws, by slot.
_AREA, _LOG_RATIO = slice(0, TRIES), slice(TRIES, 2 * TRIES)
_TOP, _LEFT = 2 * TRIES, 2 * TRIES + 1
_JITTER_P, _ORDER, _FACTORS = 22, slice(23, 27), slice(27, 31)
_BLUR_P, _SIGMA, _GRAY_P, _FLIP_P, _SOLARIZE_P = 31, 32, 33, 34, 35
SLOTS = 36


@dataclass(frozen=True)
class ViewSpec:
    """One view's pipeline: the ops in order and their settings (SPEC §3)."""

    size: int
    crop_scale: tuple[float, float]
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    jitter_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    blur_kernel: int
    gray_p: float
    hflip: bool
    solarize_p: float
    order: tuple[str, ...]  # of "crop", "jitter", "blur", "gray", "flip", "solarize"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def byol_specs(image_size: int, *, crop_scale=(0.08, 1.0), hflip=True, blur_kernel_fraction=0.1,
               normalize_mean: Sequence[float] = IMAGENET_MEAN,
               normalize_std: Sequence[float] = IMAGENET_STD) -> tuple[ViewSpec, ViewSpec]:
    """BYOL's two views, as ``augment.two_view_transforms`` (FIDELITY: blur p 1.0 / 0.1,
    solarize p 0.0 / 0.2; crop, jitter, blur, grayscale, flip, solarize in this order)."""
    shared = dict(size=image_size, crop_scale=tuple(crop_scale), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8,
                  blur_sigma=(0.1, 2.0), blur_kernel=blur_kernel_size(image_size, blur_kernel_fraction),
                  gray_p=0.2, hflip=hflip, order=("crop", "jitter", "blur", "gray", "flip", "solarize"),
                  mean=tuple(normalize_mean), std=tuple(normalize_std))
    return ViewSpec(blur_p=1.0, solarize_p=0.0, **shared), ViewSpec(blur_p=0.1, solarize_p=0.2, **shared)


def mocov2_specs(image_size: int, *, crop_scale=(0.2, 1.0), hflip=True, blur_kernel_fraction=0.1,
                 normalize_mean: Sequence[float] = IMAGENET_MEAN,
                 normalize_std: Sequence[float] = IMAGENET_STD) -> tuple[ViewSpec, ViewSpec]:
    """MoCo v2's view (both alike), as ``augment.mocov2_transforms``."""
    spec = ViewSpec(size=image_size, crop_scale=tuple(crop_scale), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
                    blur_p=0.5, blur_sigma=(0.1, 2.0), blur_kernel=blur_kernel_size(image_size, blur_kernel_fraction),
                    gray_p=0.2, hflip=hflip, solarize_p=0.0, order=("crop", "jitter", "gray", "blur", "flip"),
                    mean=tuple(normalize_mean), std=tuple(normalize_std))
    return spec, spec


BATCHED_SPECS = {"byol": byol_specs, "mocov2": mocov2_specs}


def uniforms(seed: int, epoch: int, indices: Sequence[int], views: int = 2) -> torch.Tensor:
    """``(len(indices), views, SLOTS)`` uniforms in [0, 1): image ``i``'s are drawn from a
    generator seeded by (seed, epoch, i) alone, so they do not depend on the batch."""
    out = torch.empty(len(indices), views, SLOTS)
    generator = torch.Generator()
    for row, index in enumerate(indices):
        generator.manual_seed(derive_seed(seed, epoch, int(index)))
        torch.rand(views, SLOTS, generator=generator, out=out[row])
    return out


# --------------------------------------------------------------------------- parameters


def crop_boxes(u: torch.Tensor, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """``(B, 4)`` crop boxes (top, left, h, w) as torchvision's ``RandomResizedCrop.get_params``
    draws them: up to 10 tries of an area fraction U(scale) and a log-ratio U(log ratio), the first
    that fits, else the central crop clamped to the ratio range."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, _AREA].double())
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, _LOG_RATIO].double()
    aspect = torch.exp(log_r)
    # Python's round (half to even) as torchvision's int(round(...)): torch.round is half to even too.
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.double().argmax(1), torch.full_like(fits[:, 0], -1, dtype=torch.long))
    # the central fallback (no try fits)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    pick = first.clamp(min=0).unsqueeze(1)
    ok = first >= 0
    h = torch.where(ok, h.gather(1, pick).squeeze(1), torch.full_like(ok, fh, dtype=torch.double))
    w = torch.where(ok, w.gather(1, pick).squeeze(1), torch.full_like(ok, fw, dtype=torch.double))
    # torch.randint(0, n) is floor(u * n) in distribution
    top = torch.where(ok, torch.floor(u[:, _TOP].double() * (height - h + 1)), torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(ok, torch.floor(u[:, _LEFT].double() * (width - w + 1)), torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], 1).long()


def jitter_factors(u: torch.Tensor, jitter: tuple[float, float, float, float]) -> torch.Tensor:
    """``(B, 4)`` factors as torchvision's ColorJitter draws them: U[1 - x, 1 + x] for brightness,
    contrast and saturation, U[-x, x] for hue."""
    b, c, s, h = jitter
    low = torch.tensor([1 - b, 1 - c, 1 - s, -h])
    high = torch.tensor([1 + b, 1 + c, 1 + s, h])
    return low + (high - low) * u[:, _FACTORS]


def jitter_order(u: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` a uniformly random order of the four jitter ops per image (torchvision draws a
    ``randperm(4)`` per image): the ranks of four uniforms."""
    return u[:, _ORDER].argsort(1)


# --------------------------------------------------------------------------- operations (0..255 floats)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop (top, left, h, w) resized to ``size`` x ``size``, rounded to levels.

    When no crop is larger than the output (every crop of a dataset built at its training size:
    digits, MNIST, STL10) this is torchvision's bilinear resize of the crop, exactly: output pixel
    o samples the crop at (o + 1/2) * crop / size - 1/2, clamped to the crop's edge pixels
    (``grid_sample`` on those points). Larger crops go through ``roi_align``, which averages
    ceil(crop / size) bilinear samples per output pixel where torchvision's antialiased resize
    weighs a triangle of that width (DEVIATION: the filter of a downscale differs slightly)."""
    b, _, height, width = x.shape
    boxes = boxes.to(x.device)
    top, left, h, w = boxes.unbind(1)
    if int(boxes[:, 2:].max()) > size:  # one host read of the batch's largest crop
        rois = torch.stack([torch.arange(b, device=x.device), left, top, left + w, top + h], 1).to(x.dtype)
        out = roi_align(x, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return out.round_().clamp_(0, 255)
    o = torch.arange(size, device=x.device, dtype=torch.float64) + 0.5

    def axis(start, length, extent):
        src = start[:, None] + o[None, :] * (length[:, None].double() / size) - 0.5
        src = torch.minimum(torch.maximum(src, start[:, None].double()), (start + length - 1)[:, None].double())
        return (src / (extent - 1) * 2 - 1).to(x.dtype)  # align_corners=True: -1 / +1 at the edge pixels

    gx, gy = axis(left, w, width), axis(top, h, height)
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], -1)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.round_().clamp_(0, 255)  # torchvision's uint8 resize rounds


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, torchvision's weights, ``(B, 1, H, W)``."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's uint8 blend: factor * x + (1 - factor) * other, clamped, truncated to a level."""
    f = factor.view(-1, 1, 1, 1)
    return (x * f + other * (1 - f)).clamp_(0, 255).floor_()


def brightness(x, factor):
    return _blend(x, torch.zeros_like(x), factor)


def contrast(x, factor):
    # torchvision: the mean of the grayscale image (its levels floored first, uint8 input)
    return _blend(x, _gray(x).floor_().mean((1, 2, 3), keepdim=True), factor)


def saturation(x, factor):
    return _blend(x, _gray(x).floor_(), factor)


def hue(x, factor):
    import kornia

    hsv = kornia.color.rgb_to_hsv(x / 255.0)
    # kornia's hue is an angle in [0, 2 pi); torchvision's factor is a fraction of the wheel
    h = torch.remainder(hsv[:, :1] + factor.view(-1, 1, 1, 1) * (2 * math.pi), 2 * math.pi)
    rgb = kornia.color.hsv_to_rgb(torch.cat([h, hsv[:, 1:]], 1))
    # torchvision's float -> uint8 conversion: x * 255, truncated
    return (rgb * 255).clamp_(0, 255).floor_()


JITTER = (brightness, contrast, saturation, hue)


def blur(x, sigma, kernel: int):
    import kornia

    s = sigma.to(x.dtype).view(-1, 1).expand(-1, 2)
    return kornia.filters.gaussian_blur2d(x, (kernel, kernel), s, border_type="reflect").round_().clamp_(0, 255)


def grayscale(x):
    return _gray(x).floor_().expand_as(x)


def solarize(x):
    return torch.where(x >= 128, 255 - x, x)


def _apply(x: torch.Tensor, mask: torch.Tensor, op, *args) -> torch.Tensor:
    """``op`` on the images where ``mask`` (on the CPU) holds, the others unchanged. The mask is
    read on the host only: the selection moves to the device as an index, with no sync."""
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    if len(idx) == len(mask):
        return op(x, *args)
    idx = idx.to(x.device)
    return x.index_copy(0, idx, op(x.index_select(0, idx), *(a.index_select(0, idx) for a in args)))


def decisions(u: torch.Tensor, spec: ViewSpec) -> dict[str, torch.Tensor]:
    """Which images each random op is applied to (CPU bool ``(B,)`` per op), as RandomApply /
    RandomGrayscale / RandomHorizontalFlip / RandomSolarize decide with their p."""
    return {
        "jitter": u[:, _JITTER_P] < spec.jitter_p,
        "blur": u[:, _BLUR_P] < spec.blur_p,
        "gray": u[:, _GRAY_P] < spec.gray_p,
        "flip": (u[:, _FLIP_P] < 0.5) & spec.hflip,
        "solarize": u[:, _SOLARIZE_P] < spec.solarize_p,
    }


def blur_sigmas(u: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Per image, sigma ~ U[sigma_min, sigma_max] (torchvision's GaussianBlur)."""
    return spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[:, _SIGMA]


# --------------------------------------------------------------------------- the pipeline


def augment(images: torch.Tensor, u: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """One view of a uint8 batch ``(B, 3, H, W)``: float32 ``(B, 3, size, size)``, normalised.

    ``u``: the view's ``(B, SLOTS)`` uniforms (:func:`uniforms`), on the CPU."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"batched augmentation takes a uint8 batch of shape (B, 3, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")
    device = images.device
    x = images.float()
    b, _, height, width = x.shape
    apply = decisions(u, spec)
    for op in spec.order:
        if op == "crop":
            x = resized_crops(x, crop_boxes(u, height, width, spec.crop_scale), spec.size)
        elif op == "jitter":
            factors = jitter_factors(u, spec.jitter).to(device, x.dtype)
            order = jitter_order(u)
            for position in range(4):  # each image's own order of the four ops
                for k, fn in enumerate(JITTER):
                    x = _apply(x, apply["jitter"] & (order[:, position] == k), fn, factors[:, k])
        elif op == "blur":
            x = _apply(x, apply["blur"], lambda t, s: blur(t, s, spec.blur_kernel), blur_sigmas(u, spec).to(device))
        elif op == "gray":
            x = _apply(x, apply["gray"], grayscale)
        elif op == "flip":
            x = _apply(x, apply["flip"], lambda t: t.flip(-1))
        elif op == "solarize":
            x = _apply(x, apply["solarize"], solarize)
        else:
            raise ValueError(f"unknown operation {op!r}")
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255
    return (x - mean) / std


class Indexed(torch.utils.data.Dataset):
    """(image, index) of a dataset of (image, label): what a batch's views are made from."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index][0], index


class BatchedTwoView:
    """``(images, indices, epoch) -> (view1, view2)`` for a uint8 batch on any device."""

    def __init__(self, specs: tuple[ViewSpec, ViewSpec], seed: int):
        self.specs, self.seed = specs, seed

    def __call__(self, images: torch.Tensor, indices: Sequence[int], epoch: int):
        u = uniforms(self.seed, epoch, indices)
        return augment(images, u[:, 0], self.specs[0]), augment(images, u[:, 1], self.specs[1])
