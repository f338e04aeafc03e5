"""Figure 3: linear top-1 against the BN batch (samples per GPU), BYOL vs Momentum² Teacher.

One panel for the paper's curves, one per reproduced profile (each on its own y axis).

The paper's two curves come from Table 4's grid file (``tables/t04_bn_batch.yaml``, values
transcribed from the paper); the reproduced points come from ``tables/out/table4*.csv``,
written by ``python -m repro render t04 --profile P``, one marker style per profile. The
report (``report.py``) draws it from the same functions; ``figures/fig3_bn_batch.py`` is the
command line.

    python figures/fig3_bn_batch.py [--results tables/out] [--out figures/out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from ..grid import load_table
from ..paths import REPO
from .claims import CONTROL_ROW


def paper_curves() -> pd.DataFrame:
    """(method, bn_batch, top1) from the paper's Table 4."""
    table = load_table("t04")
    rows = []
    for row in table.rows:
        method, bn = row.id.rsplit("-", 1)
        if row.paper.get("top1") is not None:
            rows.append({"method": method, "bn_batch": int(bn), "top1": row.paper["top1"]})
    return pd.DataFrame(rows)


def reproduced_points(results_dir: Path) -> pd.DataFrame:
    """(method, bn_batch, top1, top1_std, profile) of every finished Table 4 row, all profiles.

    The ``random-init`` control (a reduced scale's untrained model) has no BN batch of its own:
    it comes as method ``random-init`` with bn_batch NA, drawn as a level across the panel."""
    frames = []
    for csv in sorted(Path(results_dir).glob("table4*.csv")):
        if csv.name.endswith("_runs.csv"):
            continue
        df = pd.read_csv(csv)
        df = df[df["top1"].notna()]
        control = df[df["row"] == CONTROL_ROW]
        df = df[df["row"].str.fullmatch(r"[a-z]+-\d+")]  # BN-batch rows
        if not control.empty:
            frames.append(pd.DataFrame({"method": CONTROL_ROW, "bn_batch": pd.NA, "top1": control["top1"],
                                        "top1_std": control.get("top1_std"), "profile": control["profile"]}))
        if df.empty:
            continue
        split = df["row"].str.rsplit("-", n=1, expand=True)
        frames.append(pd.DataFrame({"method": split[0], "bn_batch": split[1].astype(int), "top1": df["top1"],
                                    "top1_std": df.get("top1_std"), "profile": df["profile"]}))
    cols = ["method", "bn_batch", "top1", "top1_std", "profile"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def figure_data(results_dir: Path) -> pd.DataFrame:
    paper = paper_curves().assign(profile="paper", top1_std=None)
    return pd.concat([paper, reproduced_points(results_dir)], ignore_index=True)


def draw(data: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel for the paper's curves and one per reproduced profile: a CPU profile's
    accuracies live on another scale than ImageNet's, so they get their own y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"byol": "BYOL", "ours": "Momentum² Teacher"}
    colors = {"byol": "tab:blue", "ours": "tab:red"}
    profiles = ["paper"] + sorted(p for p in data["profile"].unique() if p != "paper")
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
            elif profile == "paper":
                ax.plot(g["bn_batch"], g["top1"], "-o", color=colors.get(method), label=f"{label} (paper)")
            else:
                ax.errorbar(g["bn_batch"], g["top1"], yerr=pd.to_numeric(g["top1_std"], errors="coerce"), fmt="-s",
                            capsize=3, color=colors.get(method), mfc="none", label=f"{label} (reproduced)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([16, 32, 64, 128, 256, 512])
        ax.set_xticklabels(["16", "32", "64", "128", "256", "512"])
        ax.set_xlabel("BN batch (samples per GPU)")
        ax.set_ylabel("linear top-1 (%)")
        ax.set_title("the paper (ImageNet, 300 epochs)" if profile == "paper" else f"reproduced: profile {profile}",
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="figures/fig3_bn_batch.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "tables" / "out")
    parser.add_argument("--out", type=Path, default=REPO / "figures" / "out")
    args = parser.parse_args(argv)
    data = figure_data(args.results)
    for p in draw(data, args.out):
        print(f"written: {p}")
    n = int((data["profile"] != "paper").sum())
    print(f"{n} reproduced points" + ("" if n else " (none yet: run `make table4`)"))
    return 0
