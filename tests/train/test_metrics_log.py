"""MetricsLog: metrics.jsonl, the record the suite reads, and the same numbers in TensorBoard."""

import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from repro.train.loop import MetricsLog


def test_records_go_to_jsonl_and_to_tensorboard(tmp_path):
    with MetricsLog(tmp_path / "metrics.jsonl") as log:
        for step in (1, 2, 3):
            log.write({"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 0.1, "tau": 0.99, "alpha": 1.0,
                       "sec_per_iter": None if step == 1 else 0.25, "time": 123.0, "note": "text"})
        log.write({"step": 4, "loss": math.nan})
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert set(board.Tags()["scalars"]) == {"train/loss", "train/lr", "train/tau", "train/alpha", "train/sec/iter"}
    assert [(e.step, e.value) for e in board.Scalars("train/loss")] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [e.step for e in board.Scalars("train/sec/iter")] == [2, 3]  # None and NaN are not scalars


def test_ranks_other_than_0_write_nothing(tmp_path):
    with MetricsLog(tmp_path / "metrics.jsonl", enabled=False) as log:
        log.write({"step": 1, "loss": 1.0})
    assert list(tmp_path.iterdir()) == []
