"""Training curves from metrics.jsonl: every row, each seed, their mean; `repro curves`."""

import json

import matplotlib

from repro.cli import main
from repro.grid import expand, load_table
from repro.results.curves import draw_curves, metrics_frame

matplotlib.use("Agg")


def _log(root, row, seed, lines):
    run = next(r for r in expand(load_table("t01"), "smoke") if r.row == row and r.seed == seed)
    d = run.run_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text(lines)


def test_metrics_frame_keeps_the_last_of_a_resumed_step_and_skips_a_torn_line(tmp_path):
    rec = lambda step, loss, **k: json.dumps({"step": step, "loss": loss, **k}) + "\n"  # noqa: E731
    _log(tmp_path, "bn-bn", 0, rec(1, 3.0) + rec(2, 2.9) + rec(2, 2.5) + rec(3, 2.0, knn_top1=40.0) + '{"step": 4')
    frame = metrics_frame(load_table("t01"), "smoke", tmp_path)
    assert list(zip(frame["step"], frame["loss"])) == [(1, 3.0), (2, 2.5), (3, 2.0)]
    assert frame["knn_top1"].notna().sum() == 1 and set(frame["label"]) == {"BN / BN"}


def test_one_thin_line_per_seed_a_bold_mean_per_row_and_a_knn_panel_where_logged(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    for row in ("bn-bn", "bn-mbn"):
        _log(tmp_path, row, 0, "".join(json.dumps({"step": s, "loss": 3.0 - s / 10, "knn_top1": 30.0 + s})
                                        + "\n" for s in range(1, 7)))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    path = draw_curves(load_table("t01"), "smoke", tmp_path, tmp_path / "out" / "c.png")
    assert path.stat().st_size > 1000
    (fig,) = figures
    loss, knn = fig.axes
    assert knn.get_ylabel() == "kNN top-1 (%)"
    widths = sorted(line.get_linewidth() for line in loss.get_lines())
    assert widths == [0.7, 0.7, 2.0, 2.0]  # one seed each: its thin line and the bold mean
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["BN / BN (1 seeds)", "BN / Momentum BN (1 seeds)"]


def test_repro_curves_writes_the_png_or_says_there_is_nothing(tmp_path, capsys):
    assert main(["curves", "t01", "--profile", "smoke", "--runs", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "has logged a step yet" in capsys.readouterr().err
    _log(tmp_path, "bn-bn", 0, json.dumps({"step": 1, "loss": 2.0}) + "\n")
    assert main(["curves", "t01", "--profile", "smoke", "--runs", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "curves_table1_smoke.png").stat().st_size > 1000
