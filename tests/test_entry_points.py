"""Every entry point of the Makefile, run as a user runs it, at PROFILE=smoke on a fresh runs
directory: `make table1` ... `make table12`, `make transfer-coco`, `make transfer-lvis`,
`make figure3`, `make report`.

Each goes through the real CLI, the real local executor (submitit's LocalExecutor: one process
per task) and the frozen code snapshot under ``<runs>/.code/`` (the jobs never import the live
tree), and must end with exit 0 and a complete rendered table: every row of the profile `done`
with its measured values, every other row saying why it has none. The targets run in the
order a user would (Table 8's teachers before the transfer tables that start from them), in
one runs directory shared by the module.

Tables 9-11 need Detectron2 (tests/needs.py: skipped without it, failing under CI=true).
About 15 minutes on 2 cores with Detectron2; deselect with `-m "not entry_points"`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import needs
from repro.grid import expand, load_table

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.entry_points, pytest.mark.slow]

# (make target, the tables it renders), in the order a user runs them.
TARGETS = [(f"table{n}", [f"t{n:02d}"]) for n in range(1, 9)] + [
    ("table9", ["t09"]), ("table10", ["t10"]), ("table11", ["t11"]), ("table12", ["t12"]),
    ("transfer-coco", ["t09", "t10"]), ("transfer-lvis", ["t11"]), ("figure3", []), ("report", []),
]
NEEDS_DETECTRON2 = {"table9", "table10", "table11", "transfer-coco", "transfer-lvis"}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """`make <target>` with this test's python, into a fresh runs / tables / figures folder."""
    root = tmp_path_factory.mktemp("entry_points")
    venv = Path(sys.prefix)
    stamp = venv / ".installed-stamp"
    variables = [f"VENV={venv}", "PROFILE=smoke", f"RUNS={root / 'runs'}", f"OUT={root / 'tables'}",
                 f"FIG_OUT={root / 'figures'}"]

    def make(target: str) -> subprocess.CompletedProcess:
        # -o: the venv running this test is installed already; never reinstall it from here.
        cmd = ["make", "--no-print-directory", "-C", str(REPO), "-o", str(stamp), target, *variables]
        env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)

    return make, root


def check_complete(table_name: str, csv: Path) -> None:
    """Every row of the smoke profile done with its measured values; the others say why not."""
    table = load_table(table_name)
    ran = {r.row for r in expand(table, "smoke")}
    df = pd.read_csv(csv).set_index("row")
    # Rows limited to other profiles (the `random-init` control runs at `cpu` only) are not shown.
    shown = [r for r in table.rows if r.profiles is None or "smoke" in r.profiles]
    assert list(df.index) == [r.id for r in shown]
    for row in shown:
        got = df.loc[row.id]
        if row.id not in ran:
            assert got["status"] == ("paper only" if not row.run else "not in profile"), row.id
            continue
        assert got["status"] == "done", (row.id, got["status"])
        for key in table.columns:  # what the paper reports for the row is measured too
            if row.paper.get(key) is not None:
                assert key in df.columns and not pd.isna(got[key]) and math.isfinite(got[key]), (row.id, key)
        for key, value in row.paper.items():  # the paper's values carried through
            assert (value is None and pd.isna(got[f"paper_{key}"])) or got[f"paper_{key}"] == value


@pytest.mark.parametrize("target,tables", TARGETS, ids=[t for t, _ in TARGETS])
def test_entry_point(target, tables, user):
    if target in NEEDS_DETECTRON2:
        needs.detectron2()
    make, root = user
    done = make(target)
    assert done.returncode == 0, f"make {target} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for name in tables:
        stem = f"table{int(name[1:])}"
        check_complete(name, root / "tables" / f"{stem}.csv")
        assert "| " in (root / "tables" / f"{stem}.md").read_text()
    if tables:  # the jobs ran from the snapshot, not from the live tree
        assert any((root / "runs" / ".code").glob("*/tables/t08_sota.yaml"))
    if target in ("table4", "figure3"):
        fig = root / "figures" / "fig3.png"
        assert fig.is_file() and fig.stat().st_size > 10_000
    if target == "report":
        md = (root / "tables" / "report.md").read_text()
        assert "## Verdicts" in md and "## Tables" in md
        assert (root / "tables" / "report.html").stat().st_size > 10_000
