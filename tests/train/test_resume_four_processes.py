"""A resumed run of 4 processes ends bitwise equal to the same run uninterrupted.

With 3 or more gloo processes, the sum of a gradient element depends on the order in which
the ranks' values are added, which gloo's ring all-reduce picks by the element's position in
DDP's bucket; DDP puts every gradient in one bucket for a process's first step and rebuilds
the buckets after it, so a process that resumes at step k would add step k's gradients in
another order than the uninterrupted run did (found by the 2-node requeue test,
tests/launch/test_slurm_multinode.py). With 2 processes a + b = b + a and nothing shows.
"""

import dataclasses
import json

import torch

from repro.grid import expand, load_table
from repro.train import checkpoint as ckpt
from repro.train import pretrain as train

STEPS, STOP = 4, 2


def config(max_steps):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == "syncbn-mbn")
    cfg = run.config
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, world_size=4, max_steps=max_steps,
                                                              checkpoint_every=STOP))


def _runs(rank, world, whole, parts):
    """In one set of processes: the whole run, then the same run stopped and resumed (each
    pretrain() call wraps a new DDP, whose first step is the one that buckets differently)."""
    train.pretrain(config(STEPS), whole, progress=False)
    train.pretrain(config(STEPS), parts, stop_at_step=STOP, progress=False)
    train.pretrain(config(STEPS), parts, progress=False)


def test_four_processes_resume_bitwise(tmp_path, distributed):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    distributed(_runs, 4, str(whole), str(parts))
    losses = [[json.loads(line)["loss"] for line in open(d / "metrics.jsonl")] for d in (whole, parts)]
    assert len(losses[0]) == STEPS and len(losses[1]) == STEPS
    assert losses[0] == losses[1]
    a, b = ckpt.load(ckpt.checkpoints(whole)[-1]), ckpt.load(ckpt.checkpoints(parts)[-1])
    assert a["step"] == b["step"] == STEPS
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
