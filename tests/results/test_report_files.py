"""make report: report.md and report.html from run records, deterministic and self-contained."""

import re

from repro.grid import load_table
from repro.results.report import build
from report_helpers import write_records


def test_report_has_verdicts_tables_figure_and_provenance(tmp_path):
    root = write_records(tmp_path / "runs")
    paths = build([root], tmp_path / "out")
    md = paths["md"].read_text()
    # one verdict row per claim, with the columns of each scale
    assert "| claim | where | paper's numbers | reproduced, paper scale | `cpu` (reduced scale) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| [mbn-beats-syncbn-teacher]"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert "supported" in cells[2] and "not run" in cells[3] and "v-supported" in cells[4]
    assert "kNN: " in cells[4]
    # Table 6 was not run at cpu scale; Table 2 has no cpu profile at all
    assert "v-not-run" in next(line for line in md.splitlines() if line.startswith("| [dynamic-alpha-beats-fixed]"))
    assert next(line for line in md.splitlines() if line.startswith("| [gain-over-byol")).rstrip().endswith("— |")
    # evidence rows with both seeds, and the scale caveat
    assert "| BN / Momentum BN (`bn-mbn`) | measured | 2 | 94.20 |" in md
    assert "not the paper's STL10/ImageNet numbers" in md
    # provenance from the records, every table, Figure 3
    assert "`cpu`: 24/32 runs done" in md and "wall time 1.00 h (0.40 h of training summed over runs)" in md
    assert "commit `0123456789ab` (24 runs)" in md and "hosts: testhost" in md
    assert md.count("\n### Table ") == 12
    assert "![Figure 3: BN batch robustness](figures/fig3.png)" in md
    assert (tmp_path / "out" / "figures" / "fig3.png").stat().st_size > 1000
    assert (tmp_path / "out" / "tables" / "cpu" / "table1.csv").is_file()


def test_html_is_self_contained(tmp_path):
    paths = build([write_records(tmp_path / "runs")], tmp_path / "out")
    page = paths["html"].read_text()
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    hrefs = re.findall(r'\bhref="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    ids = set(re.findall(r'\bid="([^"]*)"', page))
    assert {h[1:] for h in hrefs} <= ids
    assert "<link" not in page and "<script" not in page


def test_rendering_the_same_records_twice_gives_the_same_files(tmp_path):
    root = write_records(tmp_path / "runs")
    first = build([root], tmp_path / "a")
    second = build([root], tmp_path / "b")
    assert first["md"].read_bytes() == second["md"].read_bytes()
    assert first["html"].read_bytes() == second["html"].read_bytes()


def test_roots_are_searched_in_order_and_smoke_can_be_left_out(tmp_path):
    a = write_records(tmp_path / "a")
    b = write_records(tmp_path / "b", profile="smoke")
    md = build([a, b], tmp_path / "out", exclude=("smoke",))["md"].read_text()
    assert "`smoke`" not in md
    md = build([a, b], tmp_path / "out2")["md"].read_text()
    assert "`smoke` (reduced scale)" in md and "plumbing only" in md


def test_no_records_gives_a_report_of_not_run(tmp_path):
    (tmp_path / "none").mkdir()
    md = build([tmp_path / "none"], tmp_path / "out")["md"].read_text()
    assert "No run records found" in md
    assert "- `paper` (paper scale): 22 not run" in md


def test_training_curves_stand_beside_the_table_they_belong_to(tmp_path):
    import matplotlib.image

    paths = build([write_records(tmp_path / "runs")], tmp_path / "out")
    md = paths["md"].read_text()
    line = "![Training curves of table1 at profile cpu: loss against step](figures/curves_table1_cpu.png)"
    table1 = md.split('<a id="table1"></a>')[1].split('<a id="table2"></a>')[0]
    assert line in table1 and table1.index("Profile `cpu`") < table1.index(line)
    assert md.count("![Training curves") == 1  # Table 4's records logged no step: no figure
    assert matplotlib.image.imread(tmp_path / "out" / "figures" / "curves_table1_cpu.png").shape == (418, 660, 4)
    assert paths["html"].read_text().count("<img") == 2


def test_a_reduced_scale_table_says_what_it_can_and_cannot_show(tmp_path):
    """Under the rendered table, from its own numbers: no control (a working pipeline only), a
    trained row at or below the control (no learning signal), every row above it; and one seed
    (cannot order the methods) or several."""
    import json

    from repro.grid import expand, load_table
    from repro.results.collect import render

    def table_md(root, values):
        for run in expand(load_table("t01"), "cpu-mnist"):
            if run.row in values and run.seed < len(values[run.row]):
                d = run.run_dir(root)
                d.mkdir(parents=True, exist_ok=True)
                (d / "final.json").write_text(json.dumps({"top1": values[run.row][run.seed], "sec_per_iter": 0.2}))
        return render(load_table("t01"), "cpu-mnist", root, root / "out")["md"].read_text()

    rows = ["syncbn-syncbn", "bn-syncbn", "syncbn-bn", "bn-bn", "bn-mbn", "syncbn-mbn"]
    text = table_md(tmp_path / "a", {r: [92.0] for r in rows})
    assert "No `random-init` control has a result" in text and "One seed per row" in text
    text = table_md(tmp_path / "b", {**{r: [92.0, 91.0] for r in rows}, "random-init": [92.5, 92.5]})
    assert "**No learning signal.** 6 of 6 trained rows score at or below" in text and "2 seeds per row" in text
    text = table_md(tmp_path / "c", {**{r: [92.0] for r in rows}, "bn-bn": [90.0], "random-init": [83.0]})
    assert "Every trained row scores above the `random-init` control (Top-1 (%): 83.00), the lowest by 7.00" in text
    # the paper's scale: no such note
    assert "random-init" not in render(load_table("t01"), "paper", tmp_path / "a", tmp_path / "p")["md"].read_text()


def test_a_verdict_read_before_the_planned_seeds_are_in_is_marked_interim(tmp_path):
    """A campaign under way: Table 1 at cpu-mnist plans 3 seeds; with 2 in, every verdict that
    read them says it is interim (in the verdicts table, the per-profile counts and the claim's
    own section); with all 3 in, none does, even with a row of the last seed missing."""
    import json

    from repro.grid import expand

    def report(seeds):
        root = tmp_path / f"runs{seeds}"
        for run in expand(load_table("t01"), "cpu-mnist"):
            if run.seed < seeds and (run.seed, run.row) != (2, "bn-mbn"):
                d = run.run_dir(root)
                d.mkdir(parents=True, exist_ok=True)
                top1 = 80.0 if run.row == "random-init" else 90.0 + run.seed + (2.0 if "syncbn" in run.row else 0.0)
                (d / "final.json").write_text(json.dumps({"top1": top1, "knn_top1": top1, "sec_per_iter": 0.2}))
        return build([root], tmp_path / f"out{seeds}", profiles=["cpu-mnist"])["md"].read_text()

    md = report(2)
    row = next(line for line in md.splitlines() if line.startswith("| [syncbn-critical]"))
    assert "*interim (2 of 3 seeds)*" in row
    assert "interim: t01 has fewer seeds in than planned" in md
    assert "Interim: 2 of the 3 seeds this profile plans have results" in md
    assert "interim" not in next(line for line in md.splitlines() if line.startswith("| [dynamic-alpha-beats-fixed]"))
    md = report(3)
    assert "*interim (" not in md and "Interim:" not in md and "fewer seeds in" not in md
