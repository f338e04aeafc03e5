"""The collapse monitor: the per-dimension std of L2-normalised projections, logged at log steps."""

import dataclasses
import json
import math

import pytest
import torch

from repro.grid import expand, load_table
from repro.train.monitor import LatestOutput, output_std
from repro.train.pretrain import pretrain


def test_spread_outputs_give_one_over_sqrt_d_and_a_collapse_gives_zero():
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert output_std(z) == pytest.approx(1 / math.sqrt(64), rel=0.02)
    assert output_std(torch.ones(32, 64) + 1e-9 * z[:32].float()) == pytest.approx(0.0, abs=1e-6)


def test_the_hook_keeps_the_latest_output_and_changes_nothing():
    layer = torch.nn.Linear(4, 3)
    kept = LatestOutput(layer)
    assert kept.std() is None
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    assert torch.equal(kept.output, y.detach()) and kept.std() == pytest.approx(output_std(y))


def test_metrics_log_the_projection_std_at_log_steps(tmp_path):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == "bn-bn")
    cfg = dataclasses.replace(run.config, train=dataclasses.replace(run.config.train, world_size=1, max_steps=2))
    pretrain(cfg, tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]  # log_every 1
    # the per-dimension variances of unit vectors sum to at most 1 (n / (n - 1) with the
    # unbiased std over a batch of n): the mean std is at most 1/sqrt(d), its healthy value
    d, n = cfg.model.projection_dim, cfg.train.bn_batch_size
    assert all(0 < m["projection_std"] <= math.sqrt(n / (n - 1) / d) for m in lines)
