"""Synced BN that works on CPU (gloo) as well as CUDA (paper Table 1's "Synced BN").

``torch.nn.SyncBatchNorm`` refuses CPU tensors, so on CPU the statistics are combined
with a differentiable all-gather (``torch.distributed.nn``): every process normalises
with the mean and biased variance of the concatenated batch of all processes, and
gradients flow back across processes exactly as for one BN over the whole batch.
On CUDA the same module defers to torch's fused implementation. Under autocast the
statistics and running buffers stay float32; the output takes the activation's dtype.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .momentum_bn import normalize


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# torch.distributed.nn's differentiable all-gather is deprecated; its suggested replacement
# (torch.distributed._functional_collectives) is private, and its autograd all-gather measured
# no faster on gloo here (3.7 ms forward + backward against 3.3, 2 processes, 129 floats). The
# warning is silenced once, for that message only, rather than per call in the training step.
warnings.filterwarnings("ignore", message=r".*all_gather is deprecated", category=FutureWarning)


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch of all processes.

    Accepts (N, C), (N, C, L) and (N, C, H, W) inputs. Outside torch.distributed (or with
    one process) it is plain batch norm. State-dict keys are those of ``nn.BatchNorm2d``.
    Not a subclass of ``nn.SyncBatchNorm``: DistributedDataParallel refuses those on CPU.
    """

    process_group = None  # the default group, as nn.SyncBatchNorm's default
    # CUDA: torch's fused forward, which needs only these from its own class.
    _check_non_zero_input_channels = nn.SyncBatchNorm._check_non_zero_input_channels
    _cuda_forward = nn.SyncBatchNorm.forward

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        if x.is_cuda:
            return self._cuda_forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        count = x.numel() // x.shape[1]
        # Under autocast (train.precision bf16 / fp16) the activations are low precision; the
        # statistics, their gather and the running buffers stay in the buffers' float32.
        dtype = self.running_mean.dtype if self.track_running_stats else torch.float32
        var, mean = torch.var_mean(x.to(dtype) if x.dtype != dtype else x, dim=dims, correction=0)
        local = torch.cat([mean, var, mean.new_full((1,), float(count))])
        stats = torch.stack(dist_nn.all_gather(local))  # (world, 2C + 1), differentiable
        c = x.shape[1]
        means, vars_, counts = stats[:, :c], stats[:, c : 2 * c], stats[:, 2 * c :]
        total = counts.sum()
        # Combine per-process (mean, biased var) without the unstable sum-of-squares form.
        g_mean = (counts * means).sum(0) / total
        g_var = (counts * (vars_ + (means - g_mean) ** 2)).sum(0) / total
        if self.track_running_stats:
            with torch.no_grad():
                n = total.item()
                momentum = 0.1 if self.momentum is None else self.momentum
                self.running_mean.lerp_(g_mean.detach(), momentum)
                self.running_var.lerp_(g_var.detach() * (n / max(n - 1, 1)), momentum)
                self.num_batches_tracked.add_(1)
        return normalize(x, g_mean, g_var, self.weight, self.bias, self.eps).to(x.dtype)


def convert_to_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by :class:`SyncBatchNorm` (state copied)."""
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        new = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.to(module.weight.device if module.affine else module.running_mean.device)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_to_sync_bn(child))
    return module
