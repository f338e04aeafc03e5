"""Figure 3: linear top-1 against the BN batch (samples per GPU), BYOL vs Momentum² Teacher.

One panel for the paper's curves, one per reproduced profile (each on its own y axis).

Each point comes from a Table 4 row's summary (``results.collect.summarise``) and the row's
config: the method from its teacher norm (BN: BYOL, Momentum BN: ours), the BN batch from
``train.bn_batch_size``, the ``random-init`` control from ``train.max_steps: 0``. The paper's two
curves are the paper values of the rows in Table 4's ``paper`` profile (transcribed in
``tables/t04_bn_batch.yaml``). The report (``report.py``) hands over the summaries it holds;
the command line (``figures/fig3_bn_batch.py``) reads them from the ``table4*.csv`` files that
``python -m repro render t04 --profile P`` writes, so ``make figure3`` redraws exactly when they
change.

    python figures/fig3_bn_batch.py [--results tables/out] [--out figures/out]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from ..config import ConfigError
from ..grid import PAPER_PROFILE, Table, expand, load_table
from ..paths import REPO
from .claims import CONTROL_ROW

TABLE = "t04"
METHODS = {"bn": "byol", "mbn": "ours"}  # Table 4's teacher norms and the curves they draw
COLUMNS = ["method", "bn_batch", "top1", "top1_std", "profile", "diverged", "seeds"]
TRANSCRIBED = "paper (transcribed)"  # the panel of the paper's values; "paper" is the profile that reruns them


def row_points(table: Table, profile: str) -> dict[str, tuple[str, int | None]]:
    """Row id -> (method, BN batch) from each row's config at ``profile``; the control (never
    trained) has no BN batch of its own: (``random-init``, None)."""
    out = {}
    for run in expand(table, profile):
        cfg = run.config
        if cfg.train.max_steps == 0:
            out[run.row] = (CONTROL_ROW, None)
        elif cfg.model.teacher_norm in METHODS:
            out[run.row] = (METHODS[cfg.model.teacher_norm], cfg.train.bn_batch_size)
    return out


def paper_curves(table: Table) -> pd.DataFrame:
    """(method, bn_batch, top1) from the paper's Table 4: its ``paper`` profile's rows."""
    points = row_points(table, PAPER_PROFILE)
    rows = [{"method": points[r.id][0], "bn_batch": points[r.id][1], "top1": r.paper["top1"]}
            for r in table.rows if r.id in points and r.paper.get("top1") is not None]
    return pd.DataFrame(rows)


def reproduced_points(table: Table, summary: pd.DataFrame, profile: str) -> pd.DataFrame:
    """(method, bn_batch, top1, top1_std, profile, diverged, seeds) of every Table 4 row of
    ``summary`` with a measured top-1 or a diverged seed (``diverged``: how many of its finished ``seeds``;
    top1 is then the mean over the others, NA when none trained). The control comes with
    bn_batch NA, drawn as a level across the panel."""
    points = row_points(table, profile)
    diverged = (pd.to_numeric(summary["seeds_diverged"], errors="coerce").fillna(0).astype(int)
                if "seeds_diverged" in summary else pd.Series(0, index=summary.index))
    done = summary[(summary["top1"].notna() | (diverged > 0)) & summary["row"].isin(points)]
    return pd.DataFrame({
        "method": [points[r][0] for r in done["row"]],
        "bn_batch": pd.array([points[r][1] for r in done["row"]], dtype="Int64"),
        "top1": done["top1"].astype(float).to_numpy(),
        "top1_std": pd.to_numeric(done["top1_std"], errors="coerce").to_numpy() if "top1_std" in done else None,
        "profile": profile,
        "diverged": diverged[done.index].to_numpy(),
        # the seeds that finished (trained or diverged): "1 of 1 diverged" while a campaign is under way
        "seeds": (pd.to_numeric(done["seeds_done"], errors="coerce") + diverged[done.index]).to_numpy()
        if "seeds_done" in done else None,
    }, columns=COLUMNS)


def figure_data(table: Table, summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's curves and every profile's points: ``summaries`` maps a profile to its
    Table 4 summary."""
    frames = [paper_curves(table).assign(profile=TRANSCRIBED, top1_std=None, diverged=0, seeds=None)]
    frames += [reproduced_points(table, s, p) for p, s in summaries.items()]
    return pd.concat([f for f in frames if len(f)], ignore_index=True)[COLUMNS]


def rendered_summaries(results_dir: Path, table: Table) -> dict[str, pd.DataFrame]:
    """The Table 4 summaries rendered under ``results_dir`` (``table4*.csv``), by profile; a
    profile this table no longer has is left out, with a note."""
    out = {}
    for csv in sorted(Path(results_dir).glob("table4*.csv")):
        if csv.name.endswith("_runs.csv"):
            continue
        df = pd.read_csv(csv)
        for profile, summary in df.groupby("profile"):
            if profile not in table.profiles:
                print(f"{csv}: profile {profile!r} is not one of {table.name}'s; left out", file=sys.stderr)
                continue
            out[profile] = summary
    return out


def draw(data: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel for the paper's curves and one per reproduced profile: a CPU profile's
    accuracies live on another scale than ImageNet's, so they get their own y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"byol": "BYOL", "ours": "Momentum² Teacher"}
    colors = {"byol": "tab:blue", "ours": "tab:red"}
    profiles = [TRANSCRIBED] + sorted(p for p in data["profile"].unique() if p != TRANSCRIBED)
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.0 * len(profiles), 3.8), squeeze=False)
    for ax, profile in zip(axes[0], profiles):
        group = data[data["profile"] == profile]
        for method, g in group.groupby("method"):
            g = g.sort_values("bn_batch")
            label = names.get(method, method)
            if method == CONTROL_ROW:  # the untrained model: a level, with its seed-to-seed spread
                y, sd = g["top1"].iloc[0], pd.to_numeric(g["top1_std"], errors="coerce").iloc[0]
                if pd.notna(sd):
                    ax.axhspan(y - sd, y + sd, color="0.5", alpha=0.15, lw=0)
                ax.axhline(y, color="0.4", ls="--", lw=1, label="random init (control, never trained)")
            elif profile == TRANSCRIBED:
                ax.plot(g["bn_batch"], g["top1"], "-o", color=colors.get(method), label=f"{label} (paper)")
            else:
                ax.errorbar(g["bn_batch"], g["top1"], yerr=pd.to_numeric(g["top1_std"], errors="coerce"), fmt="-s",
                            capsize=3, color=colors.get(method), mfc="none", label=f"{label} (reproduced)")
                _mark_diverged(ax, g, colors.get(method), list(names).index(method) if method in names else 0)
        ax.set_xscale("log", base=2)
        ticks = sorted({int(b) for b in group["bn_batch"].dropna()}) or [16, 32, 64, 128, 256, 512]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("BN batch (samples per GPU)")
        ax.set_ylabel("linear top-1 (%)")
        ax.set_title("the paper (ImageNet, 300 epochs)" if profile == TRANSCRIBED else f"reproduced: profile {profile}",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Figure 3: robustness to the BN batch", fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "fig3.png", out_dir / "fig3.pdf"]
    for p in paths:  # atomic: never a half-written figure
        fmt = p.suffix[1:]
        # no creation date in the PDF: the same results give the same bytes
        atomic_write(p, lambda f: fig.savefig(f, format=fmt, dpi=150,
                                               metadata={"CreationDate": None} if fmt == "pdf" else None))
    plt.close(fig)
    return paths


def _mark_diverged(ax, g: pd.DataFrame, color, line: int) -> None:
    """Say at each point whose training diverged at some seeds how many: its value is the mean
    over the seeds that trained (a row where none did is marked at the panel's floor, each
    method on its own ``line`` of text there)."""
    hit = g[pd.to_numeric(g["diverged"], errors="coerce").fillna(0) > 0]
    for r in hit.itertuples():
        seeds = f" of {int(r.seeds)}" if pd.notna(r.seeds) else ""
        text = f"{int(r.diverged)}{seeds} diverged"
        if pd.notna(r.top1):
            ax.annotate(text, (r.bn_batch, r.top1), textcoords="offset points", xytext=(4, -10), fontsize=6,
                        color=color)
        else:
            ax.plot([r.bn_batch], [0.03 + 0.07 * line], marker="x", color=color, transform=ax.get_xaxis_transform(),
                    clip_on=False)
            ax.annotate(text, (r.bn_batch, 0.03 + 0.07 * line), xycoords=ax.get_xaxis_transform(),
                        textcoords="offset points", xytext=(5, -3), fontsize=6, color=color)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="figures/fig3_bn_batch.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "tables" / "out")
    parser.add_argument("--out", type=Path, default=REPO / "figures" / "out")
    args = parser.parse_args(argv)
    try:
        table = load_table(TABLE)
        data = figure_data(table, rendered_summaries(args.results, table))
    except (ConfigError, OSError, KeyError, ValueError) as e:
        print(f"figure 3: {e}", file=sys.stderr)
        return 2
    for p in draw(data, args.out):
        print(f"written: {p}")
    n = int((data["profile"] != TRANSCRIBED).sum())
    print(f"{n} reproduced points" + ("" if n else " (none yet: run `make table4`)"))
    return 0
