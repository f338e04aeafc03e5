"""A peer: the same BYOL step built with lightly, against ours (teacher norm bn and mbn).

Same torchvision ResNet, batch, head sizes (ResNet-18: 512 -> 512 -> 128, predictor
128 -> 512 -> 128), SGD, EMA weight and machine. lightly's step follows its BYOL example
(lightly/examples/pytorch/byol.py): update_momentum on backbone and projection head, then
student and momentum forward per view, NegativeCosineSimilarity, backward, step.

Loss: lightly's NegativeCosineSimilarity is -mean(cos); our loss is
mean(4 - 2 cos(p1, k2) - 2 cos(p2, k1)). So we use 2 * (ncs(p0, z1) + ncs(p1, z0)), which is
ours minus the constant 4: the same gradients. (lightly's example takes 0.5 * (...), a
gradient 4x smaller; timing does not depend on it.) Differences that remain: lightly's first
head Linear has no bias (it is followed by BN), ours has one (SPEC §2); its teacher runs with
grad enabled but on parameters that do not require it, ours under torch.no_grad().

    pip install 'lightly>=1.5'   # or: pip install -e '.[bench]'
    python bench/bench_peer_lightly.py [--arch resnet18] [--image-size 96] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import sys

import _timing
import torch
import torchvision
from torch import nn

from bench_momentum_bn import make_step
from repro.core.model import HEAD_SIZES

try:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
except ImportError:
    print("lightly is not installed: pip install 'lightly>=1.5' (or pip install -e '.[bench]'); skipping")
    sys.exit(0)

FEATURES = {"resnet18": 512, "resnet50": 2048}


class LightlyBYOL(nn.Module):
    """lightly's BYOL model, as in its example."""

    def __init__(self, arch: str):
        super().__init__()
        resnet = getattr(torchvision.models, arch)()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        hidden, out = HEAD_SIZES[arch]
        self.projection_head = BYOLProjectionHead(FEATURES[arch], hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


def make_lightly_step(arch: str, image_size: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = LightlyBYOL(arch).train()
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x0, x1 = (torch.randn(batch, 3, image_size, image_size) for _ in range(2))

    def step() -> None:
        update_momentum(model.backbone, model.backbone_momentum, m=0.99)
        update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
        p0, z0 = model(x0), model.forward_momentum(x0)
        p1, z1 = model(x1), model.forward_momentum(x1)
        loss = 2 * (criterion(p0, z1) + criterion(p1, z0))  # = our loss - 4
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _timing.step_arguments(parser, arch_choices=sorted(FEATURES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import lightly

    print(_timing.machine() + f", lightly {lightly.__version__}")
    size = (args.arch, args.image_size, args.batch)
    steps = {"lightly BYOL": make_lightly_step(*size), "ours bn": make_step(*size, "bn"),
             "ours mbn": make_step(*size, "mbn")}
    times = _timing.interleaved(steps, args.repeats)
    print(f"\n{args.arch} {args.image_size} px, {args.batch} images x 2 views ({args.repeats} steps each); "
          f"images/s = images per step / step time:")
    _timing.report(times, "lightly BYOL", per_call=args.batch)


if __name__ == "__main__":
    main()
