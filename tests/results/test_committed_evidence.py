"""The committed CPU-scale evidence: run records in results/cpu and the report rendered from them.

`make cpu-report` must reproduce the committed report from the committed records alone, so
every number in it can be traced to a run record.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from evidence import as_committed, committed_evidence
from repro.grid import expand, load_table
from repro.results.claims import CONTROL_ROW
from repro.results.report import build

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "results" / "cpu"
# The CPU-scale campaigns and their tables (the Makefile's CPU_PROFILES / CPU_TABLES): the
# first design (cpu, finished before the control existed) and the second (cpu-mnist, issue
# 17), which spans sessions: a run of it is checked once its record is committed.
CAMPAIGNS = {"cpu": ("t01", "t04", "t06"), "cpu-mnist": ("t01",), "cpu-8x4": ("t01", "t04", "t06")}


def test_every_cpu_run_has_a_committed_record_from_clean_code():
    machine = json.loads((EVIDENCE / "machine.json").read_text())
    assert machine["git"]["dirty"] is False and machine["machine"]["cores"] >= 1
    for profile, table in [(p, t) for p, tables in CAMPAIGNS.items() for t in tables]:
        for run in expand(load_table(table), profile):
            record = run.run_dir(EVIDENCE) / "final.json"
            if (profile != "cpu" or run.row == CONTROL_ROW) and not record.is_file():
                continue  # the cpu campaign predates the control (see the last test); cpu-mnist is under way
            final = json.loads(record.read_text())
            assert final["git"]["dirty"] is False and len(final["git"]["commit"]) == 40
            if "diverged" in final:  # its result: the step its loss stopped being finite, no accuracy
                assert final["steps"] == final["diverged_at_step"] < final["total_steps"] and "top1" not in final
                assert re.fullmatch(rf"loss is (nan|inf|-inf) at step {final['steps']} \(lr [0-9.e-]+\)", final["diverged"])
                continue
            trained = 0 if run.row == CONTROL_ROW else final["total_steps"]
            assert final["steps"] == trained and 0 <= final["top1"] <= 100
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and not [p for p in tracked if "/checkpoints/" in p or p.endswith(".pt")]


def test_the_committed_report_is_what_the_records_render_to(tmp_path):
    committed = EVIDENCE / "report"
    evidence = committed_evidence(tmp_path / "checkout")  # what a clean checkout holds
    fresh = build([evidence], tmp_path / "out", list(CAMPAIGNS))
    assert as_committed(fresh["md"].read_text(), evidence) == (committed / "report.md").read_text()

    def without_images(page: str) -> str:
        return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", page)

    html = as_committed(fresh["html"].read_text(), evidence)
    assert without_images(html) == without_images((committed / "report.html").read_text())


@pytest.mark.parametrize("profile", list(CAMPAIGNS))
def test_without_a_control_no_accuracy_claim_gets_a_verdict_at_cpu_scale(profile):
    """A reviewer never reads an accuracy verdict that no `random-init` control backs."""
    from repro.results.claims import load_claims, needs_control

    def done(run) -> bool:
        return (run.run_dir(EVIDENCE) / "final.json").is_file()

    runs = [run for t in CAMPAIGNS[profile] for run in expand(load_table(t), profile)]
    trained_seeds = {(r.table, r.seed) for r in runs if r.row != CONTROL_ROW and done(r)}
    controlled_seeds = {(r.table, r.seed) for r in runs if r.row == CONTROL_ROW and done(r)}
    if not trained_seeds:
        return  # nothing trained at this profile yet: the report has no verdict of it to check
    if trained_seeds <= controlled_seeds:
        return  # every seed with results has its control: the verdicts are read (the gate decides per claim)
    lines = (EVIDENCE / "report" / "report.md").read_text().splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    column = cells(next(line for line in lines if line.startswith("| claim |"))).index(f"`{profile}` (reduced scale)")
    for claim in load_claims().claims:
        if claim.table in CAMPAIGNS[profile] and needs_control(load_table(claim.table), profile, claim.metric):
            row = next(line for line in lines if line.startswith(f"| [{claim.id}]"))
            cell = cells(row)[column]
            assert ("no learning signal" in cell or "not run" in cell) and "supported" not in cell, claim.id


def _committed_run_folders() -> dict[tuple[str, str], set[str]]:
    """{(table, profile): run ids} of every run folder git tracks under results/ (results/<machine>/
    <table>/<profile>/<run id>/...)."""
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
    folders: dict[tuple[str, str], set[str]] = {}
    for path in tracked:
        parts = path.split("/")
        if len(parts) >= 6 and re.fullmatch(r"t\d\d", parts[2]):
            folders.setdefault((parts[2], parts[3]), set()).add(parts[4])
    return folders


def test_every_committed_run_folder_is_named_by_the_id_its_table_expands_to():
    """Run ids hash the semantic config: a change to the config code that moved one would orphan
    the committed evidence (and make a relaunch train it again)."""
    folders = _committed_run_folders()
    assert sum(len(ids) for ids in folders.values()) >= 84  # the records committed when this was written
    for (table, profile), ids in folders.items():
        expanded = {run.run_id for run in expand(load_table(table), profile)}
        assert ids <= expanded, f"{table} --profile {profile}: {sorted(ids - expanded)} are no longer its runs' ids"


def test_a_committed_run_config_still_matches_its_run(tmp_path):
    """config.yaml of a committed run (written when one config held every task's sections) is the
    config of the run its folder names: relaunching its table finds it."""
    from repro.rundir import RunDir

    run = next(r for r in expand(load_table("t01"), "cpu-8x4") if (r.run_dir(EVIDENCE) / "config.yaml").is_file())
    saved = run.run_dir(EVIDENCE) / "config.yaml"
    assert "finetune:" in saved.read_text()  # every task's sections
    (run.run_dir(tmp_path)).mkdir(parents=True)
    (run.run_dir(tmp_path) / "config.yaml").write_text(saved.read_text())
    assert RunDir.of(run, tmp_path).prepare(run).config.read_text() == saved.read_text()


def test_the_committed_variance_check_is_what_the_records_render_to(tmp_path):
    """results/cpu/variance-check.md (make cpu-report): the Momentum BN rows of Table 1 at cpu-8x4
    against the same rows with the paper's biased variance, from the committed records alone."""
    from repro.results.compare import compare_variants

    evidence = committed_evidence(tmp_path / "checkout")
    pairs = {"bn-mbn": "bn-mbn-biased", "syncbn-mbn": "syncbn-mbn-biased"}  # the Makefile's VARIANCE_PAIRS
    assert compare_variants(load_table("t01"), "cpu-8x4", pairs, evidence) == (EVIDENCE / "variance-check.md").read_text()
