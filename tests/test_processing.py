"""The shared preprocessing and decoding, checked on real COCO annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poet.images import read_image
from poet.processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    decode_keypoints,
    decode_poses,
    encode_keypoints,
    fit_size,
    preprocess,
)


def _annotations(coco, split="val2017"):
    data = json.loads((coco / "annotations" / f"person_keypoints_{split}.json").read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    return data, sizes


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_encode_decode_round_trip_on_coco(coco, split):
    data, sizes = _annotations(coco, split)
    checked = 0
    for annotation in data["annotations"]:
        if annotation["num_keypoints"] == 0:
            continue
        keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(17, 3)
        size = sizes[annotation["image_id"]]
        decoded = decode_keypoints(encode_keypoints(keypoints, size))
        pixels = decoded[:, :2] * np.array([size[1], size[0]])
        assert np.abs(pixels - keypoints[:, :2]).max() < 1e-5
        np.testing.assert_array_equal(decoded[:, 2], keypoints[:, 2])
        checked += 1
    assert checked >= 10


def test_encoded_centre_is_centre_of_mass_of_labelled_keypoints():
    keypoints = np.zeros((17, 3))
    keypoints[[0, 5, 6], :] = [[100, 50, 2], [80, 120, 2], [130, 110, 1]]
    encoded = encode_keypoints(keypoints, (200, 400))
    assert encoded[0] == pytest.approx((100 + 80 + 130) / 3 / 400)
    assert encoded[1] == pytest.approx((50 + 120 + 110) / 3 / 200)


@pytest.mark.parametrize("original", [(480, 640), (640, 427), (333, 500), (100, 100), (1000, 90)])
def test_fit_size_keeps_aspect_and_fills_one_side(original):
    height, width = fit_size(original, (512, 384))
    assert height <= 512 and width <= 384
    assert height == 512 or width == 384
    assert abs(height / width - original[0] / original[1]) < 2.0 / min(height, width)


def test_preprocess_normalises_letterboxes_and_masks(coco):
    path = sorted((coco / "val2017").glob("*.jpg"))[0]
    image = read_image(path)
    config = PreprocessConfig(input_size=(256, 320))
    batch, mask, boxes = preprocess([image], config)
    assert batch.shape == (1, 3, 256, 320) and batch.dtype == np.float32 and mask.shape == (1, 256, 320)
    resized_h, resized_w = boxes[0].resized_size
    assert (resized_h, resized_w) == fit_size(image.shape[:2], (256, 320))
    assert not mask[0, :resized_h, :resized_w].any() and mask[0, resized_h:, :].all() and mask[0, :, resized_w:].all()
    assert (batch[0][:, mask[0]] == 0).all()
    # A uniform image of one colour normalises to (rgb/255 - mean)/std in every valid pixel.
    flat = np.full((40, 60, 3), (10, 200, 30), dtype=np.uint8)  # BGR
    batch, mask, _ = preprocess([flat], config)
    expected = (np.array([30, 200, 10]) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    valid = batch[0][:, ~mask[0]]
    np.testing.assert_allclose(valid, np.broadcast_to(expected[:, None], valid.shape), atol=1e-5)
    # RGB input gives the same tensor as its BGR twin.
    np.testing.assert_array_equal(preprocess([flat[..., ::-1]], config, bgr=False)[0], batch)


def test_decode_poses_filters_sorts_and_scales():
    logits = np.array([[0.0, 3.0, 0.0], [0.0, 1.0, 0.5], [4.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    kpts = np.full((4, 53), 0.5)
    kpts[:, 0:2] = [[0.25, 0.5], [0.5, 0.5], [0.1, 0.1], [0.9, 0.9]]
    poses = decode_poses(logits, kpts, image_size=(200, 400))
    # Query 2 is labelled "person without keypoints" and query 3 "no object": both dropped.
    assert [round(p.score, 4) for p in poses] == sorted((round(p.score, 4) for p in poses), reverse=True)
    assert len(poses) == 2
    np.testing.assert_allclose(poses[0].keypoints[:, :2], np.tile([100.0, 100.0], (17, 1)))
    assert len(decode_poses(logits, kpts, (200, 400), score_threshold=0.7)) == 1
    assert len(decode_poses(logits, kpts, (200, 400), max_people=1)) == 1
    entry = poses[0].to_coco(image_id=7)
    assert entry["image_id"] == 7 and entry["category_id"] == 1 and len(entry["keypoints"]) == 51
