"""The README's figures for the default `make table1` are generated from that command's committed
run records (results/local/), and go stale loudly when the records or the profile change."""

from __future__ import annotations

import pytest
from report_helpers import write_records

from repro.grid import expand, load_table
from repro.results import readme
from repro.results.readme import BEGIN, END, ReadmeError
from repro.rundir import RunDir

LOCAL = readme.RECORDS / "t01" / "local"


def test_the_readme_block_is_what_the_committed_records_render_to():
    # Fails after an edit of the block by hand, or of the records without `make record-table1`.
    assert readme.current_block(readme.README.read_text()) == readme.block()


def test_the_committed_records_are_the_current_local_profile():
    # A change to t01's `local` profile changes its run ids: this fails until `make table1` and
    # `make record-table1` have run again, so the README never shows figures of another design.
    expected = {r.run_id for r in expand(load_table("t01"), "local")}
    committed = {p.name for p in LOCAL.iterdir() if p.is_dir()}
    assert committed == expected, "rerun `make table1`, then `make record-table1`"
    for name in expected:
        assert {p.name for p in (LOCAL / name).iterdir()} == set(readme.RECORD_FILES), name


def test_the_block_shows_the_control_and_what_one_seed_cannot_show():
    text = readme.block()
    assert "Random init (control: never trained)" in text
    assert "One seed per row" in text and "make cpu-evidence" in text
    assert "minutes from the first submission to the last result" in text


def _finished_runs(root):
    write_records(root, profile="local")
    for run in expand(load_table("t01"), "local"):
        RunDir.of(run, root).prepare(run)  # the resolved config, as a launch writes it
    return root


def test_record_copies_the_records_and_rewrites_only_the_block(tmp_path):
    runs, records, doc = _finished_runs(tmp_path / "runs"), tmp_path / "results" / "local", tmp_path / "README.md"
    doc.write_text(f"# Title\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    stale = records / "t01" / "local" / "bn-bn-s0-0000000000"
    stale.mkdir(parents=True)  # an earlier design's run: replaced, not mixed in
    readme.record(runs, records, doc)
    text = doc.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{BEGIN}\n") and text.endswith(f"{END}\nafter\n")
    assert "old figures" not in text and "| BN / BN " in text
    assert readme.current_block(text) == readme.block(records)
    assert not stale.exists()
    copied = sorted(p.name for p in (records / "t01" / "local").iterdir())
    assert copied == sorted(r.run_id for r in expand(load_table("t01"), "local"))
    assert (records / "machine.json").is_file()


def test_record_refuses_an_unfinished_table_and_leaves_everything_as_it_was(tmp_path):
    runs = _finished_runs(tmp_path / "runs")
    victim = next(r for r in expand(load_table("t01"), "local") if r.row == "bn-mbn")
    (victim.run_dir(runs) / "final.json").unlink()
    doc = tmp_path / "README.md"
    doc.write_text(f"{BEGIN}\nold\n{END}\n")
    with pytest.raises(ReadmeError, match="not complete .*6/7 runs done.*make table1"):
        readme.record(runs, tmp_path / "records", doc)
    assert doc.read_text() == f"{BEGIN}\nold\n{END}\n"
    assert not (tmp_path / "records").exists()


@pytest.mark.parametrize("text", ["no markers\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{BEGIN}\n{END}\n"])
def test_a_readme_without_one_pair_of_markers_is_refused_with_what_to_add(text):
    with pytest.raises(ReadmeError, match="must hold one .*table1-local:begin"):
        readme.replace_block(text, "new\n")
