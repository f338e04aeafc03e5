"""A job whose training diverges records that as the run's result; a relaunch leaves it alone."""

import dataclasses

import pytest

from repro.config import ConfigError
from repro.grid import expand, load_table
from repro.launch import submit
from repro.launch.job import RunJob
from repro.launch.submit import LaunchReport
from repro.rundir import RunDir, Status
from repro.train import pretrain as train


def test_a_diverged_training_is_the_run_s_result_and_is_not_trained_again(tmp_path, monkeypatch):
    table = load_table("t01")
    run = next(r for r in expand(table, "smoke") if r.row == "bn-mbn")
    run = dataclasses.replace(run, config=dataclasses.replace(
        run.config, train=dataclasses.replace(run.config.train, checkpoint_every=2, log_every=1, world_size=1)))
    real = train.model_from_config

    def diverging(cfg):  # the loss is NaN from the 4th step on (step 3)
        model = real(cfg)
        forward, calls = model.forward, []

        def poisoned(v1, v2):
            calls.append(1)
            loss = forward(v1, v2)
            return loss * float("nan") if len(calls) > 3 else loss
        model.forward = poisoned
        return model

    monkeypatch.setattr(train, "model_from_config", diverging)
    root = tmp_path / "runs"
    run_dir = RunDir.of(run, root).prepare(run)
    final = RunJob(str(root))(run)  # as submitit calls it, in this process
    assert final["diverged"] == final["diverged"].strip() and final["diverged"].startswith("loss is nan at step 3 (lr ")
    assert final["diverged_at_step"] == 3 and final["steps"] == 3 and "top1" not in final
    assert final["last_good_checkpoint"] == "checkpoints/step_00000002.pt"
    assert run_dir.status() == Status.DIVERGED and not run_dir.error.exists()
    assert run_dir.state().error == f"training diverged: {final['diverged']}"

    # A relaunch counts it finished (training is deterministic: it would diverge again) and says so.
    monkeypatch.setattr(submit, "slurm_states", lambda ids: {})
    said = []
    report = submit._sort_runs(LaunchReport(table, "smoke", [run]), root, True, said.append)
    assert run in report.skipped_done and run not in report.submitted
    assert said == [f"  {run.run_id}: DIVERGED ({final['diverged']}): recorded as the run's result at its seed, "
                    "with no accuracy; a rerun diverges again (a changed config is a new run)"]


def test_a_transfer_from_a_diverged_pre_training_is_refused_naming_it(tmp_path):
    from repro.transfer.pretrained import pretraining_run, resolve_backbone

    finetune = next(r for r in expand(load_table("t12"), "smoke"))
    source = pretraining_run(finetune.config)
    d = RunDir.of(source, tmp_path).prepare(source)
    d.write_final({"diverged": "loss is inf at step 7 (lr 0.1)", "diverged_at_step": 7, "steps": 7})
    with pytest.raises(ConfigError, match=r"has no backbone: its pre-training diverged \(loss is inf at step 7"):
        resolve_backbone(finetune.config, tmp_path)
