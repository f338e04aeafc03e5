"""The difference to the paper is drawn at the paper profile only: at a reduced scale the
table shows the paper's value beside the measured one, with no difference."""

import json

import pandas as pd
import pytest

from repro.grid import expand, load_table
from repro.results.collect import render


def _all_done(root, profile, top1=80.0):
    for run in expand(load_table("t01"), profile):
        d = run.run_dir(root)
        d.mkdir(parents=True)
        (d / "final.json").write_text(json.dumps({"top1": top1, "sec_per_iter": 0.5, "knn_top1": 70.0}))


@pytest.mark.parametrize("profile", ["paper", "local", "smoke"])
def test_delta_only_at_the_paper_profile(tmp_path, profile):
    _all_done(tmp_path / "runs", profile)
    paths = render(load_table("t01"), profile, tmp_path / "runs", out_dir=tmp_path / "out")
    header = paths["md"].read_text().split("\n| Row")[1].splitlines()[0]
    csv = pd.read_csv(paths["csv"]).set_index("row")
    assert "Top-1 (%) (paper)" in header and f"Top-1 (%) ({profile})" in header
    if profile == "paper":
        assert "Δ Top-1 (%)" in header and csv.loc["bn-bn", "top1_delta"] == pytest.approx(80.0 - 84.16)
        assert "\\$\\Delta\\$" in paths["tex"].read_text() or "Δ" in paths["tex"].read_text()
    else:
        assert "Δ" not in paths["md"].read_text() and "Δ" not in paths["tex"].read_text()
        assert not any(c.endswith("_delta") for c in csv.columns)
        assert csv.loc["bn-bn", "paper_top1"] == 84.16 and csv.loc["bn-bn", "top1"] == 80.0
