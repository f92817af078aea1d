"""FP16 and INT8 variants of a small real POET: run in ONNX Runtime, stay close to FP32, fail clearly on bad input."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from poet.errors import ModelError
from poet.images import read_image
from poet.optimize.export import export_onnx
from poet.optimize.precision import CalibrationSet, PrecisionError, make_variant, prepare_onnx
from poet.processing import preprocess


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, tiny_checkpoint):
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("fp32") / "tiny.onnx", progress=False)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, coco):
    """Six photographs, none of them the evaluation inputs below (the first three validation images)."""
    folder = tmp_path_factory.mktemp("calib")
    photos = sorted((coco / "train2017").glob("*.jpg")) + sorted((coco / "val2017").glob("*.jpg"))[-2:]
    for path in photos:
        shutil.copy(path, folder)
    return folder


@pytest.fixture(scope="module")
def inputs(coco, fp32):
    photos = [read_image(p) for p in sorted((coco / "val2017").glob("*.jpg"))[:3]]
    return [preprocess([photo], fp32.info.preprocess)[:2] for photo in photos]


def _outputs(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, {"images": batch, "mask": mask}) for batch, mask in inputs]


def _max_kpt_diff(path, reference, inputs):
    return max(
        float(np.abs(ours[1] - ref[1]).max()) for ours, ref in zip(_outputs(path, inputs), reference, strict=True)
    )


def _io_types(path):
    graph = onnx.load(path).graph
    return [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)]


FLOAT_IO = [TensorProto.FLOAT, TensorProto.BOOL, TensorProto.FLOAT, TensorProto.FLOAT]


def test_fp16_variant_keeps_sensitive_ops_in_fp32_and_stays_close(fp32, inputs, tmp_path):
    variant = make_variant(fp32.path, tmp_path / "tiny.fp16.onnx", "fp16", progress=False)
    assert variant.info.precision == "fp16" and variant.info.target is None
    assert {"LayerNormalization", "Softmax", "Sigmoid", "CumSum"} <= set(variant.float_ops)
    counts = variant.info.extra["op_precision"]
    assert counts["Conv"]["reduced"] == counts["Conv"]["float"] + counts["Conv"]["reduced"] > 0
    assert _io_types(variant.path) == FLOAT_IO
    assert _max_kpt_diff(variant.path, _outputs(fp32.path, inputs), inputs) < 5e-3


def test_fp16_variant_of_a_uint8_input_model_runs_and_matches_fp32(runtime_models, coco, tmp_path):
    """AutoCast's reference run gets real letterboxed pixels, not random floats a uint8 input cannot take."""
    from poet.runtime import PoseEstimator

    variant = make_variant(runtime_models["uint8"], tmp_path / "tiny_uint8.fp16.onnx", "fp16", progress=False)
    photos = sorted((coco / "val2017").glob("*.jpg"))[:2]
    reference = PoseEstimator(runtime_models["uint8"], score_threshold=0.0).predict(photos)
    ours = PoseEstimator(variant.path, score_threshold=0.0).predict(photos)
    assert variant.info.input_format == "uint8-nhwc-bgr" and variant.info.precision == "fp16"
    for fp16_poses, fp32_poses in zip(ours, reference, strict=True):
        assert len(fp16_poses) == len(fp32_poses) > 0
        fp16_best = max(fp16_poses, key=lambda pose: pose.score)
        fp32_best = max(fp32_poses, key=lambda pose: pose.score)
        assert np.abs(fp16_best.keypoints[:, :2] - fp32_best.keypoints[:, :2]).max() < 2.0  # pixels


@pytest.mark.parametrize(
    ("target", "zero_point_type"),
    [
        ("cpu", {TensorProto.UINT8}),
        ("tensorrt", {TensorProto.INT8}),
        ("openvino", {TensorProto.UINT8, TensorProto.INT8}),  # NNCF: asymmetric where a tensor is one-sided
    ],
)
def test_int8_variants_quantize_convolutions_but_not_attention_and_stay_close(
    fp32, inputs, calib_dir, tmp_path, target, zero_point_type
):
    variant = make_variant(
        fp32.path,
        tmp_path / "int8.onnx",
        "int8",
        target=target,
        calibration=calib_dir,
        cache_dir=tmp_path,
        progress=False,
    )
    assert variant.info.precision == "int8" and variant.info.target == target
    assert variant.calibration["images"] == 6 and variant.calibration["cache"] == "miss"
    written = onnx.load(variant.path)
    assert variant.info.extra["opset"] == written.opset_import[0].version >= 17
    graph = written.graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    activation_zero_points = {
        initializers[node.input[2]].data_type
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers
    }
    assert activation_zero_points and activation_zero_points <= zero_point_type
    assert all(producers.get(node.input[0]) != "DequantizeLinear" for node in graph.node if node.op_type == "Softmax")
    assert not any(
        producers.get(name) == "DequantizeLinear"
        for node in graph.node
        if "/class_embed/" in node.name or "/kpt_embed/" in node.name
        for name in node.input
    )
    assert variant.info.extra["op_precision"]["Conv"]["float"] == 0
    assert {"Softmax", "LayerNormalization"} <= set(variant.float_ops)
    assert _io_types(variant.path) == FLOAT_IO
    assert _max_kpt_diff(variant.path, _outputs(fp32.path, inputs), inputs) < 0.05


def test_calibration_is_cached_by_content(fp32, calib_dir, tmp_path):
    settings = {"target": "cpu", "calibration": calib_dir, "num_calib": 2, "cache_dir": tmp_path, "progress": False}
    first = make_variant(fp32.path, tmp_path / "a.onnx", "int8", **settings)
    second = make_variant(fp32.path, tmp_path / "b.onnx", "int8", **settings)
    assert (first.calibration["cache"], second.calibration["cache"]) == ("miss", "hit")
    assert onnx.load(first.path).graph == onnx.load(second.path).graph
    other = make_variant(fp32.path, tmp_path / "c.onnx", "int8", **{**settings, "num_calib": 3})
    assert other.calibration["cache"] == "miss"


def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(fp32, calib_dir, tmp_path, caplog):
    settings = {"target": "cpu", "calibration": calib_dir, "num_calib": 2, "cache_dir": tmp_path, "progress": False}
    first = make_variant(fp32.path, tmp_path / "a.onnx", "int8", **settings)
    (entry,) = tmp_path.glob("int8-*.onnx")
    entry.write_bytes(entry.read_bytes()[:1000])  # a copy cut short by a full disk
    with caplog.at_level(logging.WARNING):
        again = make_variant(fp32.path, tmp_path / "b.onnx", "int8", **settings)
    assert "is damaged or incomplete: calibrating again" in caplog.text
    assert again.calibration["cache"] == "miss"
    assert onnx.load(first.path).graph == onnx.load(again.path).graph
    assert make_variant(fp32.path, tmp_path / "c.onnx", "int8", **settings).calibration["cache"] == "hit"


def test_corrupt_calibration_images_are_skipped_and_named(fp32, calib_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(calib_dir, folder)
    (folder / "000-broken.jpg").write_bytes(b"\xff\xd8 truncated")
    variant = make_variant(
        fp32.path,
        tmp_path / "v.onnx",
        "int8",
        target="cpu",
        calibration=folder,
        num_calib=3,
        cache_dir=tmp_path,
        progress=False,
    )
    assert variant.calibration["skipped"] == [str(folder / "000-broken.jpg")]
    assert variant.calibration["images"] == 2


def test_calibration_set_from_a_coco_annotation_file(fp32, coco, tmp_path):
    annotations = coco / "annotations" / "person_keypoints_val2017.json"
    calibration = CalibrationSet(coco / "val2017", annotations)
    variant = make_variant(
        fp32.path,
        tmp_path / "v.onnx",
        "int8",
        target="cpu",
        calibration=calibration,
        num_calib=2,
        cache_dir=tmp_path,
        progress=False,
    )
    assert variant.calibration["images"] == 2 and variant.calibration["source"] == str(annotations)


@pytest.mark.parametrize("content", ["empty", "corrupt"])
def test_calibration_folder_without_usable_images_is_a_clear_error(fp32, tmp_path, content):
    folder = tmp_path / "images"
    folder.mkdir()
    if content == "corrupt":
        (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image either")
    message = "has no images" if content == "empty" else "none of the 1 calibration images"
    with pytest.raises(PrecisionError, match=message):
        make_variant(fp32.path, tmp_path / "out.onnx", "int8", calibration=folder, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "out.onnx").exists()


def test_onnx_of_another_model_is_rejected_and_nothing_is_written(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), other)
    with pytest.raises(ModelError, match="not a poet-edge model"):
        make_variant(other, tmp_path / "out" / "other.fp16.onnx", "fp16", progress=False)
    with pytest.raises(ModelError, match="not a poet-edge model"):
        prepare_onnx(other, tmp_path / "out", "fp16", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_prepare_onnx_exports_a_checkpoint_then_makes_the_variant(tiny_checkpoint, tmp_path):
    result = prepare_onnx(tiny_checkpoint, tmp_path, "fp16", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fp16.onnx", "tiny.onnx"]
    assert result.path == tmp_path / "tiny.fp16.onnx" and result.info.precision == "fp16"
    assert result.info.extra["source_format"] == "poet-edge"
