"""Batched two-view augmentation (repro/data/batched.py) against the per-image torchvision
pipeline: each op's output given the same parameters, the parameters' distributions, the
probabilities, the moments of whole views; and views that depend on (seed, epoch, image) only.

Mutations these tests were checked to fail on (see each test): a crop scale of (0.25, 1)
instead of (0.08, 1), blur probabilities of the two views swapped, a second view without
solarization, grayscale or jitter at the wrong probability.
"""

import dataclasses

import pytest
import torch
from scipy import stats as scipy_stats
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from repro.data import batched as B
from repro.data.augment import derive_seed, two_view_transforms

S = 28
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def colour_images(n=48, seed=0):
    """Smooth colourful uint8 images with the full range of levels (fixed)."""
    g = torch.Generator().manual_seed(seed)
    x = TF.gaussian_blur((torch.rand(n, 3, S, S, generator=g) * 255).to(torch.uint8), 7, 3.0).float()
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo) * 255).round().to(torch.uint8)


def specs(**view2):
    v1, v2_ = B.byol_specs(S, crop_scale=(0.08, 1.0), hflip=True, normalize_mean=MEAN, normalize_std=STD)
    return v1, dataclasses.replace(v2_, **view2)


# --------------------------------------------------------------------------- each op, same parameters


def test_each_op_equals_torchvision_s_given_the_same_parameters():
    """Within one grey level (rounding) of torchvision's uint8 kernels, image by image."""
    img = colour_images(4)
    x = img.float()
    f = torch.tensor([0.6, 0.9, 1.2, 1.4])
    hue = torch.tensor([-0.1, -0.03, 0.05, 0.1])
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    boxes = torch.tensor([[0, 0, 28, 28], [3, 7, 20, 13], [10, 2, 9, 25], [20, 20, 8, 8]])
    cases = {
        "crop": (B.resized_crops(x, boxes, S), [TF.resized_crop(img[i], *boxes[i].tolist(), [S, S], antialias=True)
                                                for i in range(4)]),
        "brightness": (B.brightness(x, f), [TF.adjust_brightness(img[i], float(f[i])) for i in range(4)]),
        "contrast": (B.contrast(x, f), [TF.adjust_contrast(img[i], float(f[i])) for i in range(4)]),
        "saturation": (B.saturation(x, f), [TF.adjust_saturation(img[i], float(f[i])) for i in range(4)]),
        "hue": (B.hue(x, hue), [TF.adjust_hue(img[i], float(hue[i])) for i in range(4)]),
        "blur": (B.blur(x, sigma, 3), [TF.gaussian_blur(img[i], [3, 3], [float(sigma[i])] * 2) for i in range(4)]),
        "gray": (B.grayscale(x), [TF.rgb_to_grayscale(img[i], 3) for i in range(4)]),
        "solarize": (B.solarize(x), [TF.solarize(img[i], 128) for i in range(4)]),
    }
    for name, (ours, theirs) in cases.items():
        diff = (ours - torch.stack(theirs).float()).abs()
        assert diff.max() <= 1.0, name
        assert diff.mean() < 0.25, name


# --------------------------------------------------------------------------- parameters


def ks(a, b) -> float:
    return scipy_stats.ks_2samp(a.numpy(), b.numpy()).pvalue


def torchvision_boxes(n, scale, size=S):
    torch.manual_seed(0)
    img = torch.zeros(3, size, size)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)])


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.25, 1.0)])
def test_crop_boxes_are_distributed_as_torchvision_s(scale):
    n = 4000
    u = torch.rand(n, B.SLOTS, generator=torch.Generator().manual_seed(1))
    ours, theirs = B.crop_boxes(u, S, S, scale), torchvision_boxes(n, scale)

    def area(b):
        return (b[:, 2] * b[:, 3]).double() / S**2

    def log_ratio(b):
        return torch.log(b[:, 3].double() / b[:, 2])

    for what in (area, log_ratio, lambda b: b[:, 0].double(), lambda b: b[:, 1].double()):
        assert ks(what(ours), what(theirs)) > 1e-3
    # a crop scale of (0.25, 1) instead of (0.08, 1) is told apart
    wrong = B.crop_boxes(u, S, S, (0.25, 1.0) if scale[0] == 0.08 else (0.08, 1.0))
    assert ks(area(wrong), area(theirs)) < 1e-6


def test_jitter_factors_and_order_are_distributed_as_torchvision_s():
    n = 4000
    u = torch.rand(n, B.SLOTS, generator=torch.Generator().manual_seed(2))
    ours, order = B.jitter_factors(u, (0.4, 0.4, 0.2, 0.1)), B.jitter_order(u)
    torch.manual_seed(0)
    draws = [T.ColorJitter.get_params([0.6, 1.4], [0.6, 1.4], [0.8, 1.2], [-0.1, 0.1]) for _ in range(n)]
    theirs = torch.tensor([[d[1], d[2], d[3], d[4]] for d in draws])
    for k in range(4):
        assert ks(ours[:, k], theirs[:, k]) > 1e-3, k
    wrong = B.jitter_factors(u, (0.4, 0.4, 0.4, 0.1))  # MoCo's saturation on BYOL's view
    assert ks(wrong[:, 2], theirs[:, 2]) < 1e-6
    # every op first equally often, and every order possible: a uniform permutation as randperm(4)
    first = torch.bincount(order[:, 0], minlength=4).double()
    assert scipy_stats.chisquare(first.numpy()).pvalue > 1e-3
    assert len({tuple(o) for o in order.tolist()}) == 24


def test_blur_sigma_is_uniform_on_torchvision_s_range():
    n = 4000
    u = torch.rand(n, B.SLOTS, generator=torch.Generator().manual_seed(3))
    ours = B.blur_sigmas(u, specs()[0])
    torch.manual_seed(0)
    theirs = torch.tensor([T.GaussianBlur.get_params(0.1, 2.0) for _ in range(n)])
    assert ks(ours, theirs) > 1e-3
    assert ks(ours * 0.5 + 0.05, theirs) < 1e-6  # sigma on U[0.1, 1.05] is told apart


def per_image_probabilities(compose) -> dict:
    """The probabilities of a torchvision v2 Compose, read off its transforms."""
    out = {"flip": 0.0, "solarize": 0.0}
    for t in compose.transforms:
        if isinstance(t, v2.RandomApply):
            out["jitter" if isinstance(t.transforms[0], v2.ColorJitter) else "blur"] = t.p
        elif isinstance(t, v2.RandomGrayscale):
            out["gray"] = t.p
        elif isinstance(t, v2.RandomHorizontalFlip):
            out["flip"] = t.p
        elif isinstance(t, v2.RandomSolarize):
            out["solarize"] = t.p
    return out


def check_probabilities(view_specs):
    per_image = two_view_transforms(S, crop_scale=(0.08, 1.0), hflip=True, normalize_mean=MEAN, normalize_std=STD)
    u = B.uniforms(0, 0, range(4000))
    for view, (spec, compose) in enumerate(zip(view_specs, per_image)):
        expected = per_image_probabilities(compose)
        for op, mask in B.decisions(u[:, view], spec).items():
            p, rate = expected[op], mask.double().mean().item()
            assert abs(rate - p) <= 4.5 * (p * (1 - p) / len(mask)) ** 0.5 + 1e-12, (view, op, rate, p)


def test_each_view_applies_each_op_with_the_per_image_pipeline_s_probability():
    check_probabilities(specs())


@pytest.mark.parametrize("mutation", ["blur p swapped", "no solarize on view 2", "gray p 0.5"])
def test_a_wrong_probability_is_told_apart(mutation):
    v1, v2_ = specs()
    wrong = {"blur p swapped": (dataclasses.replace(v1, blur_p=0.1), dataclasses.replace(v2_, blur_p=1.0)),
             "no solarize on view 2": (v1, dataclasses.replace(v2_, solarize_p=0.0)),
             "gray p 0.5": (dataclasses.replace(v1, gray_p=0.5), v2_)}[mutation]
    with pytest.raises(AssertionError):
        check_probabilities(wrong)


# --------------------------------------------------------------------------- whole views


def view_stats(v: torch.Tensor) -> torch.Tensor:
    """Per image: mean level, contrast, colourfulness, bright fraction, edge strength."""
    x = v * STD[0] + MEAN[0]
    chroma = (x - x.mean(1, keepdim=True)).abs().mean((1, 2, 3))
    edges = (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), chroma, (x > 0.75).float().mean((1, 2, 3)), edges], 1)


@pytest.fixture(scope="module")
def per_image_views():
    images, draws = colour_images(), 64
    transforms = two_view_transforms(S, crop_scale=(0.08, 1.0), hflip=True, normalize_mean=MEAN, normalize_std=STD)
    out = [[], []]
    for r in range(draws):
        for i in range(len(images)):
            torch.manual_seed(derive_seed(1, r, i))
            for k in range(2):
                out[k].append(transforms[k](images[i]))
    return images, draws, [view_stats(torch.stack(o)) for o in out]


def z_scores(view_specs, per_image_views):
    images, draws, theirs = per_image_views
    augment = B.BatchedTwoView(view_specs, seed=7)
    out = [[], []]
    for r in range(draws):
        views = augment(images, list(range(len(images))), r)
        for k in range(2):
            out[k].append(views[k])
    ours = [view_stats(torch.cat(o)) for o in out]
    return torch.stack([(a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
                        for a, b in zip(ours, theirs)])


@pytest.mark.slow  # per_image_views: 6,144 torchvision view pipelines, for the statistics
def test_views_have_the_per_image_pipeline_s_moments(per_image_views):
    """3,072 views of each kind: the mean of five statistics per view within 4 standard errors."""
    z = z_scores(specs(), per_image_views)
    assert z.abs().max() < 4.0, z


@pytest.mark.slow
@pytest.mark.parametrize("mutation", ["crop scale (0.25, 1)", "no solarize on view 2", "blur p swapped"])
def test_a_wrong_op_moves_the_moments(mutation, per_image_views):
    v1, v2_ = specs()
    wrong = {
        "crop scale (0.25, 1)": B.byol_specs(S, crop_scale=(0.25, 1.0), hflip=True, normalize_mean=MEAN,
                                             normalize_std=STD),
        "no solarize on view 2": (v1, dataclasses.replace(v2_, solarize_p=0.0)),
        "blur p swapped": (dataclasses.replace(v1, blur_p=0.1), dataclasses.replace(v2_, blur_p=1.0)),
    }[mutation]
    assert z_scores(wrong, per_image_views).abs().max() > 4.0


# --------------------------------------------------------------------------- determinism


def test_views_depend_on_seed_epoch_and_image_only():
    images = colour_images(6)
    augment = B.BatchedTwoView(specs(), seed=3)
    a1, a2 = augment(images, [10, 11, 12, 13, 14, 15], epoch=2)
    # the same images in another order, in another batch, give the same views
    b1, b2 = augment(images[[5, 2, 0]], [15, 12, 10], epoch=2)
    assert torch.equal(b1, a1[[5, 2, 0]]) and torch.equal(b2, a2[[5, 2, 0]])
    c1, _ = augment(images, [10, 11, 12, 13, 14, 15], epoch=3)
    d1, _ = B.BatchedTwoView(specs(), seed=4)(images, [10, 11, 12, 13, 14, 15], epoch=2)
    assert not torch.equal(c1, a1) and not torch.equal(d1, a1)


def test_a_batch_of_the_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        B.augment(torch.zeros(2, 3, S, S), B.uniforms(0, 0, [0, 1])[:, 0], specs()[0])
