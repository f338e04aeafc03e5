"""``repro preflight``: a paper row's figures after one real step; broken rows fail in one line."""

import math

import pytest

from repro.grid import expand, load_table, with_overrides
from repro.launch.preflight import PreflightError, check_row


def t01_paper_row(row="bn-mbn"):
    return next(r for r in expand(load_table("t01"), "paper") if r.row == row)


def test_a_t01_paper_row_at_its_real_shapes():
    fig = check_row(t01_paper_row())
    # 64 x 32 = 2048; 0.1 x 8 = 0.8; 400 epochs x (105,000 // 2048 = 51) = 20,400 steps, 10 x 51 warm-up
    assert (fig["global_batch"], fig["peak_lr"], fig["m_base"]) == (2048, pytest.approx(0.8), 0.032)
    assert (fig["total_steps"], fig["warmup_steps"]) == (20_400, 510)
    assert 11e6 < fig["params_student"] < 13e6  # ResNet-18 (11.2 M) + 512 -> 512 -> 128 heads


def test_an_emulated_device_profile_keeps_the_paper_s_batch_lr_and_m_base_and_prices_its_memory():
    """paper-8x8 (8 processes x 8 emulated devices x 32): the paper's global batch, lr and m_base;
    one process holds 8 devices' images, so its activations are 8 times the paper's process."""
    emulated = check_row(next(r for r in expand(load_table("t01"), "paper-8x8") if r.row == "bn-mbn"))
    paper = check_row(t01_paper_row())
    assert (emulated["global_batch"], emulated["peak_lr"], emulated["m_base"]) == (2048, pytest.approx(0.8), 0.032)
    assert emulated["per_process"] == "8 x 8 devices x 32"
    assert (emulated["total_steps"], emulated["warmup_steps"]) == (20_400, 510)
    weights = 0.173  # GiB: 46.4 M float32 numbers (student and teacher weights, gradients, momentum)
    assert 0.1 < paper["process_memory_gib"] - weights < 1.0  # 32 images of 96 px
    assert emulated["process_memory_gib"] - weights == pytest.approx(8 * (paper["process_memory_gib"] - weights),
                                                                     rel=0.05)


def test_a_missing_data_root_fails_in_one_line_naming_the_row(tmp_path):
    run = t01_paper_row()
    with pytest.raises(PreflightError) as e:
        check_row(run, data_root=str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "t01 --profile paper, row bn-mbn" in msg and "DatasetNotFound" in msg and "\n" not in msg


def test_an_image_size_the_model_cannot_take_fails_in_one_line_naming_the_row():
    run = with_overrides(t01_paper_row("bn-bn"), {"data": {"image_size": 0}})
    with pytest.raises(PreflightError) as e:
        check_row(run)
    msg = str(e.value)
    assert "row bn-bn" in msg and "image_size 0" in msg and "\n" not in msg


@pytest.mark.slow  # two gloo processes and the probe pass
def test_a_t01_row_runs_the_real_loop_in_two_gloo_processes_on_generated_stl10_files():
    from repro.launch.preflight import check_loop

    # Synced BN student, Momentum BN teacher: both communicate across the 2 processes.
    fig = check_loop(t01_paper_row("syncbn-mbn"), steps=2)
    assert fig["loop_steps"] == 2 and fig["loop_batch"] == 32  # the row's own per-process batch
    assert math.isfinite(fig["loop_loss"]) and fig["loop_sec_per_step"] > 0
    assert 0.1 < fig["max_rss_gib"] < 16
    assert fig["probe_images"] == 64 + 32


def test_a_resnet50_moco_row_with_shuffling_bn_runs_on_a_generated_imagenet_folder():
    from repro.launch.preflight import check_loop

    run = next(r for r in expand(load_table("t03"), "paper") if r.row == "shuffle")
    assert (run.config.model.arch, run.config.data.image_size, run.config.data.dataset) == ("resnet50", 224, "imagenet")
    fig = check_loop(run, steps=2)
    assert fig["loop_steps"] == 2 and math.isfinite(fig["loop_loss"])


def test_the_loop_failure_of_a_row_is_one_line_naming_it(tmp_path):
    from repro.launch.preflight import check_loop

    # Files that exist but hold no whole image: the loop's own reader fails, inside a rank.
    (tmp_path / "stl10_binary").mkdir()
    for name in ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin"):
        (tmp_path / "stl10_binary" / name).write_bytes(b"")
    with pytest.raises(PreflightError) as e:
        check_loop(t01_paper_row("bn-bn"), data_root=str(tmp_path), steps=1)
    msg = str(e.value)
    assert "row bn-bn" in msg and "2-process loop failed" in msg and "\n" not in msg


def test_fine_tuning_rows_load_their_backbone_and_take_a_step():
    from repro.launch.preflight import check_transfer_row

    for run in expand(load_table("t12"), "local"):
        fig = check_transfer_row(run)
        assert fig["task"] == "finetune" and fig["classes"] == 10 and fig["micro_batch"] == 32
        assert f"row {run.config.pretrained.row}" in fig["backbone"]


def test_a_paper_detection_row_is_built_with_its_exported_backbone():
    from tests.needs import detectron2
    from repro.launch.preflight import check_transfer_row

    detectron2()
    (run,) = expand(load_table("t11"), "paper")
    fig = check_transfer_row(run)
    assert (fig["detector"], fig["max_iter"], fig["steps"], fig["norm"]) == ("mask_rcnn", 180_000, (120_000, 160_000), "SyncBN")
    assert fig["built"] and 23e6 < fig["backbone_params"] < 26e6  # ResNet-50 without fc: 23.5 M


def test_a_transfer_row_whose_backbone_does_not_fit_fails_in_one_line():
    from repro.launch.preflight import check_transfer_row

    run = with_overrides(expand(load_table("t12"), "local")[0], {"model": {"width": 16}})
    with pytest.raises(PreflightError) as e:
        check_transfer_row(run)
    msg = str(e.value)
    assert "row ours-300-1pct" in msg and "does not fit" in msg and "\n" not in msg


def test_a_reduced_profile_on_built_in_data_counts_its_images_and_checks_each_row_once():
    """Built-in data has no published size: the steps come from the images its builder makes
    (mnist5k: 5,000 / 32 = 156 steps an epoch, 30 epochs), and a row's seeds are checked once."""
    from repro.launch.preflight import preflight

    said: list[str] = []
    figs = preflight("t01", "cpu-8x4", loop=False, out=said.append)
    assert [f["row"] for f in figs] == list(dict.fromkeys(r.row for r in expand(load_table("t01"), "cpu-8x4")))
    assert said[0].startswith(f"preflight t01 --profile cpu-8x4: {len(figs)} rows") and len(figs) == 9
    bn = next(f for f in figs if f["row"] == "bn-bn")
    assert (bn["global_batch"], bn["per_process"], bn["total_steps"]) == (32, "1 x 8 devices x 4", 4680)
    assert "cost unknown" in said[1] and said[-1].endswith("OK (9 rows checked)")
    control = next(line for line in said if line.startswith("  random-init:"))
    assert "0 of a schedule's steps 4,680 (warm-up 156)" in control  # never stepped: train.max_steps 0
