"""Shared by the benchmarks: interleaved timing, medians and ratios, the machine line.

Every benchmark times its sides in ONE run, interleaved (A B, B A, A B, ...), after untimed
warm-up rounds, so that drift of the machine (other processes, heat, caches) hits every
side alike; it reports medians and per-round ratios.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# The scripts run as files (`python bench/x.py`): make `repro` importable without installing.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from repro.results.provenance import cpu_model  # noqa: E402


def machine(device: str = "cpu") -> str:
    """One line: CPU model, cores, torch version, threads, date (and the GPU if used)."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads{gpu}, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
        f"load {os.getloadavg()[0]:.1f} (1-min average; well above the threads used here means "
        f"other processes competed for the cores)"
    )


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed rounds, then ``repeats`` timed
    rounds, each calling every function once, the order reversed every other round
    (A B, B A, A B, ...) so that no side always runs first.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each timed call.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in list(fns.items())[:: 1 if round_ % 2 == 0 else -1]:
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(times: list[float], baseline: list[float]) -> float:
    """Median over rounds of time / baseline time in the same round."""
    return median([t / b for t, b in zip(times, baseline)])


def spread(xs: list[float]) -> float:
    """Half the interquartile range relative to the median: a noise figure, e.g. 0.03 = +-3%."""
    if len(xs) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return (q3 - q1) / 2 / statistics.median(xs)


def table(rows: list[list], headers: list[str]) -> None:
    """Print rows as a plain aligned table (floats with 3 significant digits)."""
    cells = [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def report(times: dict[str, list[float]], baseline: str, *, per_call: int | None = None) -> None:
    """Median ms per call, its spread, and the ratio to ``baseline``: the median over rounds
    of t / t_baseline within the same round, which cancels slow spells of the machine that
    hit a whole round. ``per_call`` (images per call) adds an images-per-second column.
    """
    headers = ["", "median ms", "+-", f"ratio to {baseline}"] + (["images/s"] if per_call else [])
    rows = []
    for name, ts in times.items():
        m = median(ts)
        ratio = paired_ratio(ts, times[baseline])
        row = [name, m * 1e3, f"{100 * spread(ts):.1f}%", f"{ratio:.3f}"]
        rows.append(row + ([per_call / m] if per_call else []))
    table(rows, headers)


def step_arguments(parser, *, arch_choices=None, batch_help: str = "images per view", repeats: int = 10,
                   threads: int | None = None, threads_help: str = "torch threads (default: torch's own)"):
    """The options of the benchmarks that time a model's training step."""
    parser.add_argument("--arch", default="resnet18", choices=arch_choices)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8, help=batch_help)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=threads, help=threads_help)
    return parser
