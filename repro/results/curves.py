"""Training curves of a table at one profile: loss against step for every row (each seed a
thin line, their mean bold), and kNN top-1 against step where the runs log it.

Read from each run's ``metrics.jsonl`` (the record the suite reads; TensorBoard has the same
numbers for looking at interactively). The report puts one figure beside each table;
``python -m repro curves t01 --profile local`` (``make curves TABLE=1``) writes the PNG alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from ..grid import Table, expand
from ..rundir import RunDir


def metrics_frame(table: Table, profile: str, runs_root: str | Path) -> pd.DataFrame:
    """(row, label, seed, step, loss, knn_top1) of every complete line of every run's metrics.jsonl."""
    labels = {r.id: r.label for r in table.rows}
    records = []
    for run in expand(table, profile):
        path = RunDir.of(run, runs_root).metrics
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if isinstance(rec, dict) and "step" in rec:
                records.append({"row": run.row, "label": labels.get(run.row, run.row), "seed": run.seed,
                                "step": rec["step"], "loss": rec.get("loss"), "knn_top1": rec.get("knn_top1")})
    frame = pd.DataFrame.from_records(records, columns=["row", "label", "seed", "step", "loss", "knn_top1"])
    # A resumed run logs again the steps after its last checkpoint: keep the last of each.
    return frame.drop_duplicates(["row", "seed", "step"], keep="last")


def draw_curves(table: Table, profile: str, runs_root: str | Path, path: str | Path) -> Path | None:
    """Write the figure to ``path`` (PNG); None, and nothing written, when no run logged a step."""
    data = metrics_frame(table, profile, runs_root)
    if data["loss"].notna().sum() == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "loss")] + ([("knn_top1", "kNN top-1 (%)")] if data["knn_top1"].notna().any() else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    rows = [r.id for r in table.rows if r.id in set(data["row"])]
    for ax, (key, ylabel) in zip(axes[0], panels):
        for i, row in enumerate(rows):
            mine = data[(data["row"] == row) & data[key].notna()]
            if mine.empty:
                continue
            color = colors(i % 10)
            for _, seed in mine.groupby("seed"):
                ax.plot(seed["step"], seed[key], color=color, lw=0.7, alpha=0.45)
            mean = mine.groupby("step")[key].mean()
            ax.plot(mean.index, mean.values, color=color, lw=2.0,
                    label=f"{mine['label'].iloc[0]} ({mine['seed'].nunique()} seeds)")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{table.title.split(':')[0]}, profile {profile}: training curves (thin: each seed; bold: their mean)",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))  # never a half-written figure
    plt.close(fig)
    return path
