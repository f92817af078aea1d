"""Torch predictor, drawing and the command-line tools on real COCO photographs."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch

from poet.checkpoint import load_model
from poet.cli import eval_main, predict_main
from poet.drawing import draw_poses, save_image
from poet.errors import ImageError
from poet.images import read_image
from poet.predictor import Predictor
from poet.processing import decode_poses


@pytest.fixture(scope="module")
def photos(coco):
    return sorted((coco / "val2017").glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint, score_threshold=0.0)


def test_predictor_matches_a_hand_built_letterboxed_masked_forward(predictor, photos):
    """Poses equal those of a forward pass built by hand: resize, RGB, normalise, pad, mask, decode."""
    image = read_image(photos[0])
    poses = predictor.predict(photos[0])
    assert poses and all(p.keypoints.shape == (17, 3) for p in poses)
    model = predictor.model
    height, width = round(128 * image.shape[0] / image.shape[1]), 128
    scaled = cv2.resize(image, (width, height))
    tensor = torch.from_numpy(np.ascontiguousarray(scaled[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255)
    mean = torch.tensor(model.preprocess.mean).view(3, 1, 1)
    std = torch.tensor(model.preprocess.std).view(3, 1, 1)
    canvas = torch.zeros(1, 3, 128, 128)
    canvas[0, :, :height, :width] = (tensor - mean) / std
    mask = torch.ones(1, 128, 128, dtype=torch.bool)
    mask[0, :height, :width] = False
    with torch.inference_mode():
        outputs = model(canvas, mask)
    direct = decode_poses(outputs["pred_logits"][0].numpy(), outputs["pred_kpts"][0].numpy(), image.shape[:2])
    assert len(direct) == len(poses)
    np.testing.assert_allclose(
        np.stack([p.keypoints for p in poses]), np.stack([p.keypoints for p in direct]), atol=1e-3
    )


def test_batch_and_single_predictions_agree(predictor, photos):
    batch = predictor.predict(photos)
    assert len(batch) == len(photos)
    for path, poses in zip(photos, batch, strict=True):
        single = predictor.predict(path)
        np.testing.assert_allclose([p.score for p in single], [p.score for p in poses], atol=1e-5)


def test_rgb_flag_and_bgr_default_agree(predictor, photos):
    image = read_image(photos[1])
    bgr = predictor.predict(image)
    rgb = predictor.predict(np.ascontiguousarray(image[..., ::-1]), rgb=True)
    np.testing.assert_allclose([p.keypoints for p in bgr], [p.keypoints for p in rgb])


def test_grayscale_and_rgba_images_are_converted_with_a_warning(predictor, photos, tmp_path, caplog):
    image = read_image(photos[0])
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    with caplog.at_level(logging.WARNING, logger="poet"):
        from_gray = predictor.predict(tmp_path / "gray.png")
        from_rgba = predictor.predict(tmp_path / "rgba.png")
    assert "grayscale" in caplog.text and "alpha" in caplog.text
    expected_gray = predictor.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    np.testing.assert_allclose([p.keypoints for p in from_gray], [p.keypoints for p in expected_gray])
    np.testing.assert_allclose([p.keypoints for p in from_rgba], [p.keypoints for p in predictor.predict(image)])


def test_bad_images_get_clear_errors(predictor, tmp_path):
    with pytest.raises(ImageError, match="nowhere.jpg not found"):
        predictor.predict(tmp_path / "nowhere.jpg")
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ImageError, match="notes.jpg is not a readable image"):
        predictor.predict(tmp_path / "notes.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png is not a readable image"):
        predictor.predict(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="expected uint8"):
        predictor.predict(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ImageError, match="non-zero size"):
        predictor.predict(np.zeros((0, 10, 3), dtype=np.uint8))


def test_draw_poses_marks_keypoints_and_writes_png(predictor, photos, tmp_path):
    image = read_image(photos[0])
    poses = predictor.predict(image)[:2]
    for pose in poses:
        pose.keypoints[:, 2] = 1.0
    drawn = draw_poses(image, poses)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    inside = [
        (int(x), int(y)) for x, y in poses[0].keypoints[:, :2] if 0 <= x < image.shape[1] and 0 <= y < image.shape[0]
    ]
    assert any(not np.array_equal(drawn[y, x], image[y, x]) for x, y in inside)
    save_image(tmp_path / "out.png", drawn)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), drawn)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_poet_eval_prints_the_table(tiny_checkpoint, coco, tmp_path, capsys):
    code = eval_main([str(tiny_checkpoint), "--data", str(coco), "--limit", "4", "--results", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| AP | AP50 | AP75 | APm | APl | AR | AR50 | AR75 | ARm | ARl |" in out
    results = json.loads((tmp_path / "r.json").read_text())
    assert results and {r["category_id"] for r in results} == {1}


def test_poet_eval_reports_bad_input_in_one_line(tiny_checkpoint, coco, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": [], "categories": []}))
    code = eval_main([str(tiny_checkpoint), "--annotations", str(broken), "--images", str(coco / "val2017")])
    err = capsys.readouterr().err
    assert code == 2 and "broken.json has no 'annotations'" in err and "Traceback" not in err
    assert eval_main([str(tmp_path / "missing.pth"), "--data", str(coco)]) == 2
    assert "missing.pth not found" in capsys.readouterr().err


def test_poet_predict_writes_images_and_json(tiny_checkpoint, photos, tmp_path, capsys):
    code = predict_main(
        [str(photos[0]), str(photos[1]), "--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "out")]
    )
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([f"{photos[0].stem}_poses.png", f"{photos[1].stem}_poses.png", "poses.json"])
    records = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert [r["image"] for r in records] == [str(photos[0]), str(photos[1])]


def test_load_model_moves_to_device_in_eval_mode(tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_poet_predict_skips_a_file_that_is_not_an_image_and_says_so(tiny_checkpoint, photos, tmp_path, capsys, caplog):
    """One rule for folders in every tool: skip the unreadable file with a warning, go on, count it."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    (folder / "b.jpg").write_text("not an image")
    shutil.copy(photos[1], folder / "c.jpg")
    out = tmp_path / "out"
    assert predict_main([str(folder), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_poses.png", "c_poses.png", "poses.json"]
    assert [r["image"] for r in json.loads((out / "poses.json").read_text())] == [
        str(folder / "a.jpg"),
        str(folder / "c.jpg"),
    ]
    assert f"skipping {folder / 'b.jpg'} is not a readable image" in caplog.text
    assert capsys.readouterr().out.strip().endswith("; 1 unreadable image skipped")
    for name in ("a.jpg", "c.jpg"):
        (folder / name).write_bytes(b"\xff\xd8 truncated")
    none = ["--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "none"), "--no-progress"]
    assert predict_main([str(folder), *none]) == 2
    assert (
        capsys.readouterr().err
        == f"error: none of the 3 images in {folder} could be read (first: {folder / 'a.jpg'})\n"
    )
    assert not (tmp_path / "none").exists()


def test_poet_eval_leaves_an_unreadable_image_out_of_the_ap(tiny_checkpoint, coco, tmp_path, capsys, caplog):
    images = tmp_path / "val2017"
    shutil.copytree(coco / "val2017", images)
    annotations = coco / "annotations" / "person_keypoints_val2017.json"
    listed = sorted(json.loads(annotations.read_text())["images"], key=lambda entry: entry["id"])
    (images / listed[1]["file_name"]).write_bytes(b"broken")
    code = eval_main([str(tiny_checkpoint), "--annotations", str(annotations), "--images", str(images), "--limit", "4"])
    assert code == 0 and "| AP | AP50 |" in capsys.readouterr().out
    assert f"skipping {images / listed[1]['file_name']} is not a readable image" in caplog.text
    assert "1 of the 4 images could not be read and were skipped; the AP is over the other 3" in caplog.text
