"""What a job does, per task (``run.config.task``): one plain dict maps the task to its function.

Each function takes (run, run_dir, runs_root, rank) and returns the measured record that
goes into ``final.json`` (rank 0), or None (other ranks). Imports are local so a job loads
only what its task needs (Detectron2 only for detection).
"""

from __future__ import annotations

import time
from pathlib import Path


def pretrain(run, run_dir: Path, runs_root: Path, rank: int) -> dict | None:
    from ..train.checkpoint import final_record
    from ..train.loop import TrainingDiverged
    from ..train.probe import evaluate
    from ..train.pretrain import pretrain as pretrain_loop

    try:
        summary, model = pretrain_loop(run.config, run_dir, progress=rank == 0)
    except TrainingDiverged as e:
        # The loss became NaN or Inf: an outcome of this config (training is deterministic, so a
        # rerun diverges at the same step), recorded as the run's result at its seed, with no
        # accuracy. Tables show it, and claims that need the row say so (repro/results/claims.py).
        if rank != 0:
            return None
        print(f"[{run.run_id}] training diverged: {e}", flush=True)
        return diverged_record(run_dir, e)
    if rank != 0:
        return None
    t0 = time.time()
    probe = evaluate(model, run.config, next(model.parameters()).device)
    print(f"[{run.run_id}] linear top-1 {probe['top1']:.2f}, kNN top-1 {probe['knn_top1']:.2f}", flush=True)
    return {**summary, **probe, "probe_wall_s": time.time() - t0, **final_record(run_dir)}


def diverged_record(run_dir: Path, e) -> dict:
    """What ``final.json`` records of a pre-training that diverged (``e``: its TrainingDiverged):
    why, at which step and learning rate, its pace until then, and its last good checkpoint."""
    from ..rundir import RunDir
    from ..train.checkpoint import checkpoints

    last = RunDir(run_dir).last_metrics() or {}
    found = checkpoints(run_dir)
    return {"diverged": e.reason, "diverged_at_step": e.step, "diverged_lr": e.lr, "steps": e.step,
            "total_steps": last.get("total_steps"), "sec_per_iter": last.get("sec_per_iter"), "probe_wall_s": 0.0,
            "last_good_checkpoint": found[-1].relative_to(run_dir).as_posix() if found else None}


def finetune(run, run_dir: Path, runs_root: Path, rank: int) -> dict | None:
    import torch

    from ..train.finetune import run_finetune
    from ..transfer.pretrained import resolve_backbone

    backbone = resolve_backbone(run.config, runs_root)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = run_finetune(run.config, run_dir, backbone, device)
    print(f"[{run.run_id}] fine-tuned: top-1 {result['top1']:.2f}, top-5 {result['top5']:.2f}", flush=True)
    return result


def detection(run, run_dir: Path, runs_root: Path, rank: int) -> dict | None:
    from ..transfer.detectron2 import require_detectron2, run_detection
    from ..transfer.export import save_detectron2, to_detectron2
    from ..transfer.pretrained import resolve_backbone

    require_detectron2()  # fail before any work, with how to install it
    weights = run_dir / "backbone_detectron2.pkl"
    save_detectron2(to_detectron2(resolve_backbone(run.config, runs_root)), weights)
    result = run_detection(run.config, run_dir, weights)
    print(f"[{run.run_id}] detection: box AP {result.get('box_ap')}", flush=True)
    return result


TASKS = {"pretrain": pretrain, "finetune": finetune, "detection": detection}
