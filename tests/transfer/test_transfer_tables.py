"""Tables 9-12: every transcribed paper value pinned, and the runs wired to their pre-training."""

import pytest

from repro.grid import expand, load_table
from repro.transfer.pretrained import pretraining_run

BOX_MASK = ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75")
BOX = ("box_ap", "box_ap50", "box_ap75")
MASK = ("mask_ap", "mask_ap50", "mask_ap75")
_ = None  # a cell the paper leaves empty or the OCR lost

T09 = {  # row -> (AP^bb, AP^bb_50, AP^bb_75, AP^mk, AP^mk_50, AP^mk_75)
    "mask-1x-random": (31.0, 49.5, 33.2, 28.5, 46.8, 30.4),
    "mask-1x-supervised": (38.9, 59.6, 42.7, 35.4, 56.5, 38.1),
    "mask-1x-moco-200": (38.5, 58.9, 42.0, 35.1, 55.9, 37.7),
    "mask-1x-byol-300": (39.6, 60.9, 43.3, 36.7, 58.0, 39.3),
    "mask-1x-ours-300": (39.7, 61.2, 43.2, 36.8, 58.0, 39.6),
    "mask-2x-random": (36.7, 56.7, 40.0, 33.7, 53.8, 35.9),
    "mask-2x-supervised": (40.6, 61.3, 44.4, 36.8, 58.1, 39.5),
    "mask-2x-moco-200": (40.8, 61.6, 44.7, 36.9, 58.4, 39.7),
    "mask-2x-byol-300": (41.6, 62.9, 45.8, 38.2, 59.9, 41.1),
    "mask-2x-ours-300": (41.8, 62.8, 45.9, 38.4, 60.1, 41.2),
    # Cascade: read column by column from the merged OCR line; BYOL / Ours rows lost.
    "cascade-1x-random": (35.3, 51.0, 38.3, 31.0, 48.8, 33.3),
    "cascade-1x-supervised": (42.1, 59.8, 45.9, 36.4, 57.1, 39.3),
    "cascade-1x-moco-200": (42.4, _, 46.1, 37.0, 57.2, 40.1),
    "cascade-1x-byol-300": (_, _, _, _, _, _),
    "cascade-1x-ours-300": (_, _, _, _, _, _),
    "cascade-2x-random": (40.7, 57.7, 44.2, 35.9, 55.5, 39.1),
    "cascade-2x-supervised": (43.5, 61.3, 47.4, 37.7, 58.7, 40.8),
    "cascade-2x-moco-200": (44.3, 61.9, 48.1, 38.7, 59.5, 42.0),
    "cascade-2x-byol-300": (_, _, _, _, _, _),
    "cascade-2x-ours-300": (_, _, _, _, _, _),
}
T10 = {  # row -> (AP^bb, AP^bb_50, AP^bb_75)
    "retinanet-1x-random": (24.4, 38.8, 25.8), "retinanet-1x-supervised": (37.3, 56.6, 39.8),
    "retinanet-1x-moco-200": (37.2, 56.4, 40.0), "retinanet-1x-byol-300": (36.4, 55.9, 39.2),
    "retinanet-1x-ours-300": (35.9, 55.3, 38.4),
    "retinanet-2x-random": (31.2, 48.1, 33.3), "retinanet-2x-supervised": (38.7, 58.2, 41.4),
    "retinanet-2x-moco-200": (39.0, 58.3, 41.6), "retinanet-2x-byol-300": (39.5, 59.3, 42.6),
    "retinanet-2x-ours-300": (39.4, 59.3, 42.2),
    "fcos-1x-random": (25.0, 39.2, 26.4), "fcos-1x-supervised": (38.7, 57.6, 41.9),
    "fcos-1x-moco-200": (39.0, 57.5, 42.0), "fcos-1x-byol-300": (37.6, 56.0, 41.0),
    "fcos-1x-ours-300": (37.7, 56.8, 40.8),
    "fcos-2x-random": (31.8, 48.2, 33.6), "fcos-2x-supervised": (38.5, 57.0, 41.3),
    "fcos-2x-moco-200": (38.8, 57.1, 41.7), "fcos-2x-byol-300": (39.5, 58.3, 42.5),
    "fcos-2x-ours-300": (39.9, 59.0, 43.2),
}
T11 = {"random": (22.5, 34.8, 23.8), "supervised": (24.4, 37.8, 25.8), "moco-200": (24.1, 37.4, 25.5),
       "ours-300": (26.1, 39.8, 28.1)}
T12 = {  # method -> (top-1 1%, top-1 10%, top-5 1%, top-5 10%), the paper's row layout
    "supervised": (25.4, 56.4, 48.4, 80.4), "pseudolabels": (_, _, 51.6, 82.4), "vat": (_, _, 47.0, 83.4),
    "uda": (_, 68.8, _, 88.5), "fixmatch": (_, 71.5, _, 89.1), "instdisc-200": (_, _, 39.2, 77.4),
    "pirl-800": (_, _, 57.2, 83.8), "mocov2-800": (42.3, 63.8, 70.1, 86.2), "pcl-200": (_, _, 75.3, 85.6),
    "simclr-1000": (48.3, 65.6, 75.5, 87.8), "swav-b256-200": (51.3, 67.8, 76.6, 88.6),
    "swav-b4096-200": (52.6, 68.5, 77.7, 89.2), "swav-b4096-800": (53.9, 70.2, 78.5, 89.9),
    "byol-1000": (53.2, 68.8, 78.4, 89.0), "ours-300": (57.7, 70.2, 80.8, 89.3), "ours-1000": (62.3, 72.2, 84.1, 90.1),
}


def _paper(table):
    return {r.id: r.paper for r in load_table(table).rows}


def test_table9_values_in_order():
    assert _paper("t09") == {row: dict(zip(BOX_MASK, v)) for row, v in T09.items()}
    assert [r.id for r in load_table("t09").rows] == list(T09)


def test_table10_values_in_order():
    assert _paper("t10") == {row: dict(zip(BOX, v)) for row, v in T10.items()}
    assert [r.id for r in load_table("t10").rows] == list(T10)


def test_table11_values_and_the_printed_gains():
    assert _paper("t11") == {row: dict(zip(MASK, v)) for row, v in T11.items()}
    ours, supervised = T11["ours-300"], T11["supervised"]
    # The paper prints Ours' gain over supervised: (+1.7), (+2.0), (+2.3).
    assert [round(a - b, 1) for a, b in zip(ours, supervised)] == [1.7, 2.0, 2.3]


def test_table12_values_one_row_per_subset():
    expected = {}
    for method, (t1_1, t1_10, t5_1, t5_10) in T12.items():
        expected[f"{method}-1pct"] = {"top1": t1_1, "top5": t5_1}
        expected[f"{method}-10pct"] = {"top1": t1_10, "top5": t5_10}
    assert _paper("t12") == expected
    assert [r.id for r in load_table("t12").rows] == list(expected)


@pytest.mark.parametrize("table", ["t09", "t10", "t11", "t12"])
def test_only_ours_runs_and_every_profile_names_an_existing_pretraining(table):
    t = load_table(table)
    assert {r.id for r in t.rows if r.run} == {r.id for r in t.rows if "ours" in r.id}
    assert set(t.profiles) == {"paper", "local", "smoke"}
    for profile in t.profiles:
        runs = expand(t, profile)
        assert runs and all(r.config.task == ("finetune" if table == "t12" else "detection") for r in runs)
        for run in runs:
            pre = pretraining_run(run.config)  # resolves (table, profile, row, seed) without running
            assert (pre.table, pre.profile) == ("t08", profile)
            assert pre.row == run.row.rsplit("-", 1)[0] if table == "t12" else pre.row == "ours-300"
            m, pm = run.config.model, pre.config.model
            assert (m.arch, m.width, m.small_stem) == (pm.arch, pm.width, pm.small_stem)


def test_detection_paper_profiles_are_the_papers():
    for table, detectors in (("t09", {"mask_rcnn", "cascade_mask_rcnn"}), ("t10", {"retinanet", "fcos"}),
                             ("t11", {"mask_rcnn"})):
        runs = expand(load_table(table), "paper")
        assert {r.config.detection.detector for r in runs} == detectors
        for r in runs:
            c = r.config
            assert (c.model.arch, c.model.width, c.model.small_stem) == ("resnet50", 64, False)
            assert (c.detection.gpus, c.detection.ims_per_batch) == (8, 16)  # 8 GPUs x 2 images
            assert c.detection.max_iter is None and c.detection.base_lr is None
            assert c.detection.dataset == ("lvis_v0.5" if table == "t11" else "coco")
            assert c.pretrained.which == "teacher"
    assert {r.config.detection.schedule for r in expand(load_table("t11"), "paper")} == {"2x"}


def test_semi_supervised_paper_profile():
    runs = {r.row: r.config for r in expand(load_table("t12"), "paper")}
    assert {k: (c.finetune.percent, c.finetune.epochs) for k, c in runs.items()} == {
        "ours-300-1pct": (1, 20), "ours-300-10pct": (10, 15), "ours-1000-1pct": (1, 20), "ours-1000-10pct": (10, 15)}
    for c in runs.values():
        f = c.finetune
        assert (f.batch_size, f.micro_batch_size, f.lr, f.weight_decay, c.processes) == (1024, 128, 0.08, 0.0, 1)
        assert (c.data.dataset, c.data.image_size, c.model.arch) == ("imagenet", 224, "resnet50")
    for c in (r.config for r in expand(load_table("t12"), "local")):
        assert c.data.dataset == "digits"


def test_detection_metrics_reach_the_rendered_table(tmp_path):
    import json

    import pandas as pd

    from repro.results.collect import render

    table = load_table("t11")
    run = expand(table, "smoke")[0]
    d = run.run_dir(tmp_path)
    d.mkdir(parents=True)
    (d / "final.json").write_text(json.dumps({"box_ap": 1.5, "mask_ap": 2.5, "mask_ap50": 3.5, "mask_ap75": 4.5}))
    df = pd.read_csv(render(load_table("t11"), "smoke", tmp_path, out_dir=tmp_path / "out")["csv"]).set_index("row")
    got = df.loc[run.row]
    assert got["status"] == "done" and got["mask_ap"] == 2.5 and got["mask_ap50"] == 3.5
