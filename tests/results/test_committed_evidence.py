"""The committed CPU-scale evidence: run records in results/cpu and the report rendered from them.

`make cpu-report` must reproduce the committed report from the committed records alone, so
every number in it can be traced to a run record.
"""

import json
import re
import subprocess
from pathlib import Path

from repro.grid import expand, load_table
from repro.results.report import build

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "results" / "cpu"


def test_every_cpu_run_has_a_committed_record_from_clean_code():
    machine = json.loads((EVIDENCE / "machine.json").read_text())
    assert machine["git"]["dirty"] is False and machine["machine"]["cores"] >= 1
    for table in ("t01", "t04", "t06"):
        for run in expand(load_table(table), "cpu"):
            final = json.loads((run.run_dir(EVIDENCE) / "final.json").read_text())
            assert final["git"]["dirty"] is False and len(final["git"]["commit"]) == 40
            assert final["steps"] == final["total_steps"] and 0 <= final["top1"] <= 100
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and not [p for p in tracked if "/checkpoints/" in p or p.endswith(".pt")]


def test_the_committed_report_is_what_the_records_render_to(tmp_path):
    committed = EVIDENCE / "report"
    fresh = build([EVIDENCE], tmp_path, ["cpu"])
    assert fresh["md"].read_text() == (committed / "report.md").read_text()

    def without_images(page: str) -> str:
        return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", page)

    assert without_images(fresh["html"].read_text()) == without_images((committed / "report.html").read_text())
