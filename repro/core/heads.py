"""The pieces both frameworks build a branch from: an MLP head, and encoder -> projector
(-> predictor). BYOL's model (``model.py``) and MoCo v2 (``moco.py``) both use them."""

from __future__ import annotations

import torch
from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> BN1d -> ReLU -> Linear, every Linear with bias (SPEC §2)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class Branch(nn.Module):
    """encoder -> projector (-> predictor, student only)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.encoder(x))
        return z if self.predictor is None else self.predictor(z)
