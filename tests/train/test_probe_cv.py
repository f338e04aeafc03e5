"""Cross-validated probes (probe.protocol: cv): every image tested once, deterministic, no run id moved."""

import dataclasses
from pathlib import Path

import pytest
import torch

from repro.config import config_hash
from repro.grid import expand, load_table
from repro.models.backbones import model_from_config
from repro.train.probe import cv_folds, cv_knn_top1, cv_linear_top1, evaluate


def blobs(n_per_class=20, classes=4, dim=6, spread=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_folds_cover_every_image_once_and_are_stratified():
    _, labels = blobs(n_per_class=10, classes=3)
    fold = cv_folds(labels, 5)
    assert fold.shape == labels.shape and set(fold.tolist()) == set(range(5))
    for f in range(5):  # 10 images per class over 5 folds: 2 of each class in every fold
        assert torch.bincount(labels[fold == f], minlength=3).tolist() == [2, 2, 2]
    assert torch.equal(cv_folds(labels, 5), fold)  # fixed, not drawn from the run's seed


def test_separable_features_score_100_and_chance_labels_do_not():
    feats, labels = blobs()
    fold = cv_folds(labels, 5)
    assert cv_linear_top1(feats, labels, fold, max_iter=200, c=1.0) == (100.0, 100.0)  # top-5 of 4 classes
    assert cv_knn_top1(feats, labels, fold, k=5, temperature=0.07, classes=4) == 100.0
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    assert cv_linear_top1(feats, shuffled, cv_folds(shuffled, 5), max_iter=50, c=1.0)[0] < 60.0


def test_the_same_features_give_the_same_numbers():
    feats, labels = blobs(spread=2.0)  # overlapping classes: the fit is not trivially perfect
    fold = cv_folds(labels, 5)
    a = cv_linear_top1(feats, labels, fold, max_iter=100, c=1.0)
    b = cv_linear_top1(feats.clone(), labels.clone(), fold.clone(), max_iter=100, c=1.0)
    assert a == b and 0 < a[0] < 100
    knn = [cv_knn_top1(feats.clone(), labels, fold, k=5, temperature=0.07, classes=4) for _ in range(2)]
    assert knn[0] == knn[1]


def smoke_run():
    return next(r for r in expand(load_table("t01"), "smoke") if r.row == "bn-bn")


def test_evaluate_with_protocol_cv_probes_every_labelled_image_deterministically():
    run = smoke_run()
    cfg = dataclasses.replace(run.config, probe=dataclasses.replace(run.config.probe, protocol="cv", cv_folds=2, cv_max_iter=20))
    torch.manual_seed(0)
    model = model_from_config(cfg)
    a, b = evaluate(model, cfg, torch.device("cpu")), evaluate(model, cfg, torch.device("cpu"))
    assert a == b
    assert a["probe_protocol"] == "cv" and a["probe_images"] == 1797  # all of the digits, 1,442 + 355
    assert 0 <= a["top1"] <= a["top5"] <= 100 and 0 <= a["knn_top1"] <= 100


def test_the_new_probe_fields_move_no_existing_run_id():
    run = smoke_run()
    assert config_hash(run.config) == run.run_id.rsplit("-", 1)[1]
    cv = dataclasses.replace(run.config, probe=dataclasses.replace(run.config.probe, protocol="cv"))
    assert config_hash(cv) != config_hash(run.config)
    # the committed records of the cpu campaign are still found under their ids
    evidence = Path(__file__).resolve().parents[2] / "results" / "cpu"
    trained = [r for r in expand(load_table("t01"), "cpu") if r.row != "random-init"]
    assert trained and all((r.run_dir(evidence) / "final.json").is_file() for r in trained)


@pytest.mark.parametrize("field, value", [("cv_folds", 3), ("cv_max_iter", 10), ("cv_l2", 0.5)])
def test_each_cv_setting_enters_the_id_when_set(field, value):
    cfg = smoke_run().config
    changed = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, **{field: value}))
    assert config_hash(changed) != config_hash(cfg)
