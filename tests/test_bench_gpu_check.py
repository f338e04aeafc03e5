"""bench/gpu_check.py stays importable without a GPU, and its loop configs are the real ones."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    yield gpu_check
    for name in ("gpu_check", "bench_floor", "bench_momentum_bn", "bench_devices", "_timing"):
        sys.modules.pop(name, None)


def test_loop_configs_cover_every_norm_mode_at_the_asked_options(gpu_check):
    cfgs = gpu_check.loop_configs(2, precision="bf16", channels_last=True, steps=3)
    assert set(cfgs) == set(gpu_check.LOOP_ROWS)
    modes = {(c.model.student_norm, c.model.teacher_norm) for c in cfgs.values()}
    assert modes == {("bn", "bn"), ("bn", "mbn"), ("syncbn", "syncbn"), ("syncbn", "mbn")}
    for c in cfgs.values():
        assert (c.task, c.train.world_size, c.train.max_steps, c.train.precision, c.train.channels_last) == \
            ("pretrain", 2, 3, "bf16", True)


def test_without_cuda_it_says_so_and_exits_0(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    gpu_check.main()
    assert "no CUDA device here" in capsys.readouterr().out


def test_the_devices_check_runs_on_the_cpu_and_its_loop_configs_split_devices(gpu_check):
    """The CUDA check of emulated devices is device-agnostic: here it runs on the CPU (a wrong
    per-device layer fails it), and the loop configs carry the asked device count."""
    gpu_check.devices_match_cpu_float64("cpu")
    gpu_check.batched_views_match_cpu("cpu")  # the CPU against itself: the check's own plumbing
    cfgs = gpu_check.loop_configs(1, devices=4)
    assert {c.train.devices for c in cfgs.values()} == {4}
