"""A collapse monitor for the pre-training log (issue 17).

SimSiam (Chen & He 2021, Section 4.1) watches the per-dimension standard deviation of the
L2-normalised output: if the outputs spread like a d-dimensional Gaussian it is about
1/sqrt(d); a collapse to a constant drives it to 0 while the loss can still look fine. The
loop logs it at log steps from the student projector's latest output (kept by a forward
hook: nothing is recomputed and the step is unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def output_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension std (over the batch) of L2-normalised ``z``."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean().item()


class LatestOutput:
    """Keeps the latest output of ``module`` (detached); ``std()`` is :func:`output_std` of it."""

    def __init__(self, module: nn.Module):
        self.output: torch.Tensor | None = None
        module.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.output = output.detach()

    def std(self) -> float | None:
        return None if self.output is None or len(self.output) < 2 else output_std(self.output)
