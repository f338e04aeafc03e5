"""The `random-init` control (train.max_steps 0): the job path writes a run like any other."""

import torch

from repro.grid import expand, load_table, with_overrides
from repro.launch.job import RunJob
from repro.models.backbones import model_from_config
from repro.rundir import read_json
from repro.train import checkpoint as ckpt


def test_max_steps_zero_probes_the_model_as_built(tmp_path):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == "bn-bn")
    run = with_overrides(run, {"train": {"max_steps": 0, "world_size": 1}})
    d = run.run_dir(tmp_path)
    d.mkdir(parents=True)  # the launcher's part
    final = RunJob(str(tmp_path))(run)
    final = read_json(d / "final.json")
    assert final["run_id"] == run.run_id and final["steps"] == 0 and 0 <= final["top1"] <= 100 and 0 <= final["knn_top1"] <= 100
    # its final checkpoint holds the weights the seed built, untouched
    torch.manual_seed(run.config.train.seed)
    built = model_from_config(run.config).state_dict()
    saved = ckpt.load(ckpt.checkpoints(d)[-1])
    assert saved["step"] == 0
    for k, v in built.items():
        if k in saved["model"]:
            assert torch.equal(saved["model"][k], v), k
