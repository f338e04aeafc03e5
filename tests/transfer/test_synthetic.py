"""The built-in synthetic COCO / LVIS v0.5 detection datasets: formats and determinism."""

import json

import numpy as np
import pytest
from PIL import Image

import needs
from repro.transfer import synthetic

TRANSFER_EXTRA = "the transfer extra: pip install -e '.[transfer]'"


def test_coco_format(tmp_path):
    data = synthetic.write_coco(tmp_path / "coco", num_train=6, num_val=3)
    assert data.num_classes == 3
    for json_path, images, count in ((data.train_json, data.train_images, 6), (data.val_json, data.val_images, 3)):
        coco = json.loads(json_path.read_text())
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
        assert len(coco["images"]) == count and {i["id"] for i in coco["images"]} == set(range(1, count + 1))
        assert coco["annotations"], "every split has objects"
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        sizes = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
        for image in coco["images"]:
            with Image.open(images / image["file_name"]) as im:
                assert im.size == (image["width"], image["height"]) and im.mode == "RGB"
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            width, height = sizes[a["image_id"]]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
            assert a["iscrowd"] == 0 and a["category_id"] in (1, 2, 3)
            (polygon,) = a["segmentation"]
            xs, ys = polygon[0::2], polygon[1::2]
            assert [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)] == a["bbox"]
            assert 0 < a["area"] <= w * h + 1e-6


def test_objects_are_drawn_where_annotated(tmp_path):
    rng = np.random.default_rng(3)
    pixels, objects = synthetic.make_image(rng, 64, 80)
    for obj in objects:
        x, y, w, h = obj["bbox"]
        cx, cy = int(x + w / 2), int(y + h / 2)  # every shape covers its box centre
        _, colour, _ = synthetic.CATEGORIES[obj["category"]]
        assert np.abs(pixels[cy, cx].astype(int) - colour).max() <= 20  # the category colour, jittered
    # The background is grey: equal channels.
    assert (pixels[..., 0] == pixels[..., 1]).mean() > 0.5


def test_lvis_v05_format(tmp_path):
    data = synthetic.write_lvis(tmp_path / "lvis", num_train=6, num_val=3)
    assert data.num_classes == 1230
    gt = json.loads(data.val_json.read_text())
    cats = {c["id"]: c for c in gt["categories"]}
    assert sorted(cats) == list(range(1, 1231))
    assert [cats[i]["frequency"] for i in synthetic.LVIS_USED_IDS] == ["f", "c", "r"]
    for c in gt["categories"]:
        assert {"synonyms", "synset", "def", "image_count", "instance_count"} <= set(c)
    used = set(synthetic.LVIS_USED_IDS)
    for image in gt["images"]:
        present = {a["category_id"] for a in gt["annotations"] if a["image_id"] == image["id"]}
        assert set(image["neg_category_ids"]) == used - present and image["not_exhaustive_category_ids"] == []
        folder, name = image["coco_url"].split("/")[-2:]
        assert (data.val_json.parent / folder / name).is_file()  # found the way Detectron2's loader does
    assert all("iscrowd" not in a for a in gt["annotations"])


def test_deterministic_and_idempotent(tmp_path):
    a = synthetic.write_coco(tmp_path / "a")
    synthetic.write_coco(tmp_path / "b")
    assert synthetic.digest(tmp_path / "a") == synthetic.digest(tmp_path / "b")
    before = a.train_json.stat().st_mtime_ns
    synthetic.write_coco(tmp_path / "a")  # already there with these parameters: untouched
    assert a.train_json.stat().st_mtime_ns == before
    other = synthetic.write_coco(tmp_path / "a", seed=1)  # other parameters: rewritten
    assert synthetic.digest(tmp_path / "a") != synthetic.digest(tmp_path / "b") and other.train_json.is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        synthetic.write_coco(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_readable_by_pycocotools_and_lvis(tmp_path):
    pycocotools = needs.module("pycocotools.coco", TRANSFER_EXTRA)
    data = synthetic.write_coco(tmp_path / "coco")
    coco = pycocotools.COCO(str(data.train_json))
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(ann).sum() > 0.8 * ann["area"]
    lvis = needs.module("lvis", TRANSFER_EXTRA)
    data = synthetic.write_lvis(tmp_path / "lvis")
    api = lvis.LVIS(str(data.train_json))
    assert len(api.get_img_ids()) == synthetic.DEFAULT_NUM_TRAIN and len(api.get_cat_ids()) == 1230
