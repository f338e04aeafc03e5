"""The linear probe's head follows the authors' initialisation (linear_eval_exp.py)."""

import torch
from torch import nn

from repro.train.probe import linear_head


def test_linear_head_is_linear_then_bn_with_the_authors_init():
    torch.manual_seed(0)
    head = linear_head(2048, 1000)
    assert isinstance(head[0], nn.Linear) and isinstance(head[1], nn.BatchNorm1d)
    w = head[0].weight.detach().double()
    assert torch.equal(head[0].bias, torch.zeros(1000))
    # 2,048,000 draws of N(0, 0.01): mean within 5 standard errors of 0, std within 1%
    assert abs(w.mean().item()) < 5 * 0.01 / 2048000 ** 0.5
    assert abs(w.std().item() / 0.01 - 1) < 0.01
