"""The training step reads no device value: no host synchronisation except at log steps.

Checked with torch.profiler: a device read shows up as ``aten::item`` /
``aten::_local_scalar_dense`` (``.item()``, ``int(t)``, ``bool(t)``, ``float(t)``), whatever the
device; on CPU the same calls run, so counting them here pins what a GPU would wait for.
"""

import dataclasses

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from repro import config
from repro.grid import expand, load_table
from repro.models.backbones import model_from_config
from repro.train import loop
from repro.train.pretrain import build_optimizer
from repro.train.step import AUTOCAST_DTYPES, LossWatch, train_step

READS = {"aten::item", "aten::_local_scalar_dense"}


def device_reads(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name in READS)


def smoke(optimizer="sgd", teacher_norm="mbn", precision="fp32"):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == "bn-mbn")
    cfg = run.config
    return dataclasses.replace(
        cfg, optim=dataclasses.replace(cfg.optim, optimizer=optimizer),
        model=dataclasses.replace(cfg.model, teacher_norm=teacher_norm),
        train=dataclasses.replace(cfg.train, world_size=1, precision=precision),
    )


@pytest.mark.parametrize("optimizer,teacher_norm,precision",
                         [("sgd", "mbn", "fp32"), ("lars", "mbn", "fp32"), ("sgd", "bn", "fp32"),
                          ("lars", "mbn", "bf16")])
def test_one_step_has_no_device_read(optimizer, teacher_norm, precision):
    cfg = smoke(optimizer, teacher_norm, precision)
    torch.manual_seed(0)
    model = model_from_config(cfg).train()
    opt = build_optimizer(model, cfg)
    v1, v2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    watch = LossWatch(torch.device("cpu"))
    kw = dict(lr=0.1, tau=0.99, alpha=0.5, autocast_dtype=AUTOCAST_DTYPES[precision])
    watch.observe(train_step(model, opt, v1, v2, **kw), 0, 0.1)  # first step: lazy state created

    def step():
        watch.observe(train_step(model, opt, v1, v2, **kw), 1, 0.1)

    assert device_reads(step) == 0
    # the counter does see a read such as the old step's loss.item() or int(pending_count)
    assert device_reads(lambda: float(watch.last)) >= 1  # aten::item calls aten::_local_scalar_dense


def test_watch_raises_at_the_read_naming_the_first_bad_step():
    watch = LossWatch(torch.device("cpu"))
    watch.observe(torch.tensor(1.5), 0, 0.2)
    assert watch.read() == 1.5
    watch.observe(torch.tensor(float("inf")), 1, 0.3)
    watch.observe(torch.tensor(float("nan")), 2, 0.4)
    watch.observe(torch.tensor(2.0), 3, 0.5)
    with pytest.raises(loop.TrainingDiverged, match=r"loss is inf at step 1 \(lr 0.3\)"):
        watch.read()


def test_new_train_fields_keep_run_ids():
    cfg = smoke()
    t = cfg.train
    assert config.config_hash(dataclasses.replace(cfg, train=dataclasses.replace(t, channels_last=True, compile=True))) \
        == config.config_hash(cfg)
    assert config.config_hash(dataclasses.replace(cfg, train=dataclasses.replace(t, precision="bf16"))) \
        != config.config_hash(cfg)


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp16", False)])
def test_the_loop_runs_each_precision(tmp_path, precision, channels_last):
    from repro.train.pretrain import pretrain

    cfg = smoke(precision=precision)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, channels_last=channels_last, max_steps=2))
    summary, model = pretrain(cfg, tmp_path, progress=False)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["final_loss"]))
    for name, buf in model.teacher.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name
