"""The torch-free runtime on real COCO photographs: the torch predictor's poses, any batch size, clear errors."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import onnx
import pytest

from poet.errors import ImageError, ModelError
from poet.images import read_image
from poet.modelinfo import METADATA_KEY
from poet.predictor import Predictor
from poet.processing import Letterbox, PreprocessConfig, letterbox_batch, normalize, poses_from_decoded, preprocess
from poet.runtime import PoseEstimator
from poet.runtime.backends import auto_providers


@pytest.fixture(scope="module")
def photos(coco):
    return sorted((coco / "val2017").glob("*.jpg"))[:8]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, photos):
    """The torch predictor's poses and a score threshold in the widest gap between the middle person scores.

    A threshold right next to a score would let float rounding decide the person count; this one
    keeps some people and drops others by a clear margin.
    """
    everyone = Predictor(tiny_checkpoint, score_threshold=0.0).predict(photos)
    scores = np.sort([pose.score for poses in everyone for pose in poses])
    middle = scores[len(scores) // 4 : 3 * len(scores) // 4]
    gap = int(np.argmax(np.diff(middle)))
    threshold = float(middle[gap : gap + 2].mean())
    kept = [[pose for pose in poses if pose.score >= threshold] for poses in everyone]
    return kept, threshold


def _max_keypoint_difference(expected, actual) -> float:
    """Largest x/y distance in pixels between two images' pose lists, which must have equal lengths."""
    assert [len(poses) for poses in actual] == [len(poses) for poses in expected]
    differences = [
        np.abs(a.keypoints[:, :2] - b.keypoints[:, :2]).max()
        for poses_a, poses_b in zip(expected, actual, strict=True)
        for a, b in zip(poses_a, poses_b, strict=True)
    ]
    return float(max(differences))


@pytest.mark.parametrize("input_size", [(128, 128), (256, 320)])
def test_normalised_letterbox_batch_equals_preprocess(photos, input_size):
    """uint8 letterbox + in-graph normalisation sees exactly the float path's input wherever the mask is False."""
    images = [read_image(path) for path in photos[:3]]
    images += [images[0][:, :200], cv2.resize(images[1], input_size[::-1]), images[2][:40, :30]]
    config = PreprocessConfig(input_size=input_size)
    expected, expected_mask, expected_boxes = preprocess(images, config)
    pixels, mask, boxes = letterbox_batch(images, input_size)
    assert pixels.dtype == np.uint8 and pixels.shape == (len(images), *input_size, 3)
    np.testing.assert_array_equal(mask, expected_mask)
    assert boxes == expected_boxes
    assert (pixels[mask] == 0).all()
    normalised = np.stack([normalize(image, config.mean, config.std) for image in pixels]) * ~mask[:, None]
    np.testing.assert_array_equal(normalised, expected)
    # A reused buffer holding other images gives the same result: stale pixels and mask are overwritten.
    reused = letterbox_batch(images, input_size, out=letterbox_batch(images[::-1], input_size)[:2])
    np.testing.assert_array_equal(reused[0], pixels)
    np.testing.assert_array_equal(reused[1], mask)
    with pytest.raises(ValueError, match="out must be uint8"):
        letterbox_batch(images[:2], input_size, out=(pixels, mask))


def test_decoded_poses_undo_the_letterbox_and_select_like_decode_poses():
    scores = np.array([0.7, 0.0, 0.9, 0.4], dtype=np.float32)
    keypoints = np.zeros((4, 17, 3), dtype=np.float32)
    keypoints[..., 0], keypoints[..., 1], keypoints[..., 2] = 64.0, 32.0, 0.8
    letterbox = Letterbox(original_size=(240, 640), resized_size=(48, 128))
    poses = poses_from_decoded(scores, keypoints, letterbox, score_threshold=0.3)
    assert [round(p.score, 2) for p in poses] == [0.9, 0.7, 0.4]
    np.testing.assert_allclose(poses[0].keypoints, np.tile([320.0, 160.0, 0.8], (17, 1)), rtol=1e-6)
    np.testing.assert_allclose(poses[0].box, [320.0, 160.0, 320.0, 160.0], rtol=1e-6)
    # Queries not labelled person carry score 0 and are never poses, whatever the threshold.
    assert len(poses_from_decoded(scores, keypoints, letterbox)) == 3
    assert len(poses_from_decoded(scores, keypoints, letterbox, score_threshold=0.5, max_people=1)) == 1


@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_runtime_gives_the_torch_predictors_poses(runtime_models, photos, reference, layout):
    """uint8 input with raw outputs and float input with decoding in the graph both match PyTorch."""
    expected, threshold = reference
    estimator = PoseEstimator(runtime_models[layout], score_threshold=threshold)
    assert estimator.info.preprocess.input_size == (128, 128)
    actual = estimator.predict(photos)
    assert 0 < sum(map(len, actual)) < 6 * len(photos)
    assert _max_keypoint_difference(expected, actual) < 0.05
    for poses_a, poses_b in zip(expected, actual, strict=True):
        np.testing.assert_allclose([p.score for p in poses_b], [p.score for p in poses_a], atol=1e-5)
    entry = actual[0][0].to_coco(image_id=3)
    assert entry["image_id"] == 3 and len(entry["keypoints"]) == 51


@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_batches_of_any_size_give_per_image_results(runtime_models, photos, layout):
    """5 images on a fixed batch of 2 (split and padded) and on a dynamic batch of at most 4 (split)."""
    estimator = PoseEstimator(runtime_models[layout], score_threshold=0.0)
    batch = estimator.predict(photos[:5])
    singles = [estimator.predict(path) for path in photos[:5]]
    assert _max_keypoint_difference(singles, batch) < 1e-3


def test_spinning_off_makes_onnx_runtimes_idle_threads_sleep(runtime_models, photos):
    """Benchmarks time variants in turns: a spinning ORT thread pool would steal the cores of the next one."""
    quiet = PoseEstimator(runtime_models["uint8"], spinning=False)
    options = quiet.backend.session.get_session_options()  # type: ignore[attr-defined]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = PoseEstimator(runtime_models["uint8"]).backend.session.get_session_options()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ORT's default, spinning
        default.get_session_config_entry("session.intra_op.allow_spinning")
    assert len(quiet.predict(photos[:1])[0]) == len(PoseEstimator(runtime_models["uint8"]).predict(photos[:1])[0])


def test_execution_providers_best_first_and_explicit(runtime_models):
    assert auto_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    estimator = PoseEstimator(runtime_models["uint8"], "onnxruntime", providers=["CPUExecutionProvider"], threads=1)
    assert estimator.backend.providers == ["CPUExecutionProvider"]


def test_arrays_rgb_flag_and_paths_agree(runtime_models, photos):
    estimator = PoseEstimator(runtime_models["uint8"], score_threshold=0.0)
    image = read_image(photos[0])
    from_path = estimator.predict(photos[0])
    from_bgr = estimator.predict(image)
    from_rgb = estimator.predict(np.ascontiguousarray(image[..., ::-1]), rgb=True)
    assert _max_keypoint_difference([from_path], [from_bgr]) == 0.0
    assert _max_keypoint_difference([from_path], [from_rgb]) == 0.0


def test_16_bit_and_4_channel_images_are_converted_with_a_warning(runtime_models, photos, tmp_path, caplog):
    estimator = PoseEstimator(runtime_models["uint8"], score_threshold=0.0)
    image = read_image(photos[1])
    cv2.imwrite(str(tmp_path / "deep.png"), image.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    expected = estimator.predict(image)
    with caplog.at_level(logging.WARNING, logger="poet"):
        deep = estimator.predict(tmp_path / "deep.png")
        alpha = estimator.predict(tmp_path / "alpha.png")
    assert "16-bit" in caplog.text and "alpha" in caplog.text
    assert _max_keypoint_difference([expected], [deep]) == 0.0
    assert _max_keypoint_difference([expected], [alpha]) == 0.0


def test_bad_images_get_clear_errors(runtime_models, tmp_path):
    estimator = PoseEstimator(runtime_models["uint8"])
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="notes.jpg is not a readable image"):
        estimator.predict(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="empty.png is not a readable image"):
        estimator.predict(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="non-zero size"):
        estimator.predict(np.zeros((0, 10, 3), dtype=np.uint8))


def test_bad_models_get_clear_errors(runtime_models, tmp_path):
    with pytest.raises(ModelError, match="missing.onnx not found"):
        PoseEstimator(tmp_path / "missing.onnx")
    foreign = onnx.load(runtime_models["uint8"])
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(ModelError, match=f"foreign.onnx is not a poet-edge model: .* no '{METADATA_KEY}'"):
        PoseEstimator(tmp_path / "foreign.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not protobuf")
    with pytest.raises(ModelError, match="garbage.onnx is not a loadable ONNX model"):
        PoseEstimator(tmp_path / "garbage.onnx")
    (tmp_path / "model.pt").write_bytes(b"weights")
    with pytest.raises(ModelError, match="model.pt: cannot tell the model format"):
        PoseEstimator(tmp_path / "model.pt")
    (tmp_path / "lonely.engine").write_bytes(b"serialized engine")
    with pytest.raises(ModelError, match="lonely.engine has no sidecar lonely.engine.json"):
        PoseEstimator(tmp_path / "lonely.engine")


def test_runtime_and_poet_run_work_where_torch_cannot_be_imported(runtime_models, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photos[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    script = textwrap.dedent(
        f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "onnx"):
                    raise ImportError(name + " is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        from poet.runtime import PoseEstimator
        from poet.runtime.cli import main

        poses = PoseEstimator({str(runtime_models["float"])!r}, score_threshold=0.0).predict({str(photos[0])!r})
        jsonl = {str(tmp_path / "p.jsonl")!r}
        code = main([{str(folder)!r}, "--model", {str(runtime_models["uint8"])!r}, "--jsonl", jsonl, "--no-progress"])
        assert not {{"torch", "torchvision", "onnx"}} & set(sys.modules), "a blocked module was imported"
        print("ok", len(poses), code)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok 6 0"
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [path.stem for path in photos[:2]]


def _pose_key(poses):
    return [(pose.score, pose.keypoints.tobytes(), pose.box.tobytes()) for pose in poses]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (None, "got None (what cv2.imread gives for a file it cannot read"),
        ([np.zeros((4, 4, 3), np.uint8), None], "image 1 of the list is None"),
        (3, "got type int"),
        (b"\xff\xd8", "got type bytes"),
        (np.zeros((48, 64, 3), np.float32), "dtype float32: the pixels are floats; scale them to 0-255"),
        (np.zeros((48, 64, 3), bool), "dtype bool: expected uint8 pixels"),
        (np.zeros((48, 64, 5), np.uint8), "expected 3 channels (BGR), got 5"),
        (np.zeros((2, 48, 64, 3), np.uint8), "shape (2, 48, 64, 3) and dtype uint8: a batch of images?"),
        (np.zeros(10, np.uint8), "expected 3 dimensions"),
        (np.zeros((48, 0, 3), np.uint8), "it has no pixels"),
    ],
)
def test_what_predict_cannot_take_is_one_clear_error(runtime_models, given, message):
    estimator = PoseEstimator(runtime_models["uint8"])
    with pytest.raises(ImageError, match="expected an HxWx3 uint8 BGR array .* or a path") as error:
        estimator.predict(given)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_predict_of_a_failed_imread_and_of_a_folder(runtime_models, photos, tmp_path):
    estimator = PoseEstimator(runtime_models["uint8"])
    with pytest.raises(ImageError, match="got None .*check the path"):
        estimator.predict(cv2.imread(str(tmp_path / "missing.jpg")))
    with pytest.raises(ImageError, match=re.escape(f"image {tmp_path} is a folder; expected an image file")):
        estimator.predict(tmp_path)
    with pytest.raises(ImageError, match=r"predict_arrays expected HxWx3 .* image 0 is an array of shape \(4, 4\)"):
        estimator.predict_arrays([np.zeros((4, 4), np.uint8)])
    # Grayscale and 4-channel arrays are converted (with a warning), as documented.
    grey = cv2.cvtColor(read_image(photos[0]), cv2.COLOR_BGR2GRAY)
    expected = _pose_key(estimator.predict(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    assert _pose_key(estimator.predict(grey)) == expected
    assert _pose_key(estimator.predict(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA))) == expected


@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_one_estimator_shared_by_threads_gives_the_sequential_poses(runtime_models, photos, layout):
    """4 threads x 16 frames each (the 8 photographs twice, each thread starting elsewhere) on one estimator."""
    import threading

    estimator = PoseEstimator(runtime_models[layout], score_threshold=0.0, threads=1)
    images = [read_image(path) for path in photos]
    expected = [_pose_key(estimator.predict_arrays([image])[0]) for image in images]
    threads, rounds = 4, 2
    results: dict[tuple[int, int], list] = {}
    start = threading.Barrier(threads)

    def work(thread: int) -> None:
        start.wait()
        for step in range(rounds * len(images)):
            index = (thread * 3 + step) % len(images)
            results[thread, step] = [index, _pose_key(estimator.predict_arrays([images[index]])[0])]

    workers = [threading.Thread(target=work, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(results) == threads * rounds * len(images)
    wrong = [key for key, (index, poses) in results.items() if poses != expected[index]]
    assert wrong == [], f"{len(wrong)} of {len(results)} calls returned another frame's poses"


def test_backends_that_are_not_thread_safe_run_one_call_at_a_time(runtime_models, photos, monkeypatch):
    """A backend other than ONNX Runtime (TensorRT: one context, stream and buffer set) is never entered twice."""
    import threading
    import time

    from poet.runtime import estimator as estimator_module
    from poet.runtime.backends import load_backend

    class SingleThreaded:
        def __init__(self, path, *args, **kwargs):
            self.inner = load_backend(path, "onnxruntime", threads=1)
            self.info, self.max_batch = self.inner.info, self.inner.max_batch
            self.inside, self.overlaps = 0, 0

        def infer(self, images, mask):
            self.inside += 1
            self.overlaps += self.inside > 1
            time.sleep(0.002)
            try:
                return self.inner.infer(images.copy(), mask.copy())
            finally:
                self.inside -= 1

    monkeypatch.setattr(estimator_module, "load_backend", SingleThreaded)
    estimator = PoseEstimator(runtime_models["uint8"], score_threshold=0.0)
    images = [read_image(path) for path in photos[:4]]
    expected = [_pose_key(poses) for poses in estimator.predict_arrays(images)]
    got: dict[int, list] = {}

    def work(thread: int) -> None:
        for index, image in enumerate(images):
            got[thread * 10 + index] = _pose_key(estimator.predict(image))

    workers = [threading.Thread(target=work, args=(thread,)) for thread in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert estimator.backend.overlaps == 0  # type: ignore[attr-defined]
    assert all(got[thread * 10 + index] == expected[index] for thread in range(3) for index in range(4))
