"""Every pre-training table's smoke profile runs end to end and renders next to the paper.

The runs go through the job callable that submitit runs (``RunJob``), inside a real
two-process gloo group where the profile asks for two processes; Table 1's test covers
the submitit executor itself.
"""

import pandas as pd
import pytest

from repro.grid import expand, load_table
from repro.launch.job import RunJob
from repro.rundir import prepare_run_dir
from repro.results.collect import render


def _run_all(rank, world_size, table, runs_root):
    for run in expand(load_table(table), "smoke"):
        RunJob(str(runs_root))(run)
    return True


@pytest.mark.parametrize("table", ["t02", "t03", "t04", "t05", "t06", "t07", "t08"])
def test_smoke_profile_end_to_end(table, tmp_path, distributed):
    t = load_table(table)
    runs = expand(t, "smoke")
    for run in runs:
        prepare_run_dir(run, tmp_path)
    world = {r.config.train.world_size for r in runs}
    assert len(world) == 1
    if world == {1}:
        _run_all(0, 1, table, tmp_path)
    else:
        assert distributed(_run_all, 2, table, tmp_path) == [True, True]
    df = pd.read_csv(render(table, "smoke", tmp_path, out_dir=tmp_path / "out")["csv"])
    assert list(df["row"]) == [r.id for r in t.rows]
    ran = df[df["row"].isin({r.row for r in runs})]
    assert (ran["status"] == "done").all() and ran["top1"].between(0, 100).all()
    not_run = df[~df["row"].isin({r.row for r in runs})].set_index("row")["status"]
    for row in t.rows:  # literature rows, and rows this profile leaves out, say why they have no result
        if row.id in not_run:
            assert not_run[row.id] == ("paper only" if not row.run else "not in profile")
    for row in t.rows:  # paper columns carried through to the rendered table
        got = df.set_index("row").loc[row.id]
        for col, value in row.paper.items():
            assert (pd.isna(got[f"paper_{col}"]) and value is None) or got[f"paper_{col}"] == value
