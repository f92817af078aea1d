"""ONNX export of real POET checkpoints: ONNX Runtime reproduces PyTorch on letterboxed COCO photographs."""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from poet.checkpoint import load_model, save_checkpoint
from poet.errors import CheckpointError, OutputError
from poet.images import read_image
from poet.model import build_model
from poet.modelinfo import METADATA_KEY, UINT8_NHWC, ModelInfo
from poet.optimize import export as export_module
from poet.optimize.export import ExportError, export_onnx
from poet.processing import PreprocessConfig, decode_poses, letterbox_batch, poses_from_decoded, preprocess


@pytest.fixture(scope="module")
def photos(coco):
    """Portrait, landscape and near-square photographs, so every batch has right or bottom padding."""
    images = [read_image(p) for p in sorted((coco / "val2017").glob("*.jpg"))[:12]]
    portrait = next(i for i in images if i.shape[0] > i.shape[1])
    landscape = next(i for i in images if i.shape[1] > 1.3 * i.shape[0])
    return [portrait, landscape, images[0]]


def _run(path, images, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images, "mask": mask})


def _torch(model, batch, mask):
    with torch.inference_mode():
        outputs = model(torch.from_numpy(batch), torch.from_numpy(mask))
    return outputs["pred_logits"].numpy(), outputs["pred_kpts"].numpy()


@pytest.fixture(scope="module")
def fixed(tmp_path_factory, tiny_checkpoint):
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("export") / "tiny.onnx", progress=False)


def test_export_matches_pytorch_on_letterboxed_photographs(fixed, tiny_checkpoint, photos):
    model = load_model(tiny_checkpoint)
    graph = onnx.load(fixed.path)
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version >= 17
    assert [i.name for i in graph.graph.input] == ["images", "mask"]
    assert [o.name for o in graph.graph.output] == ["pred_logits", "pred_kpts"]
    stored = ModelInfo.from_json({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert stored == fixed.info and stored.preprocess == model.preprocess and stored.num_queries == 6
    assert stored.extra["source_format"] == "poet-edge" and len(stored.extra["source_sha256"]) == 64
    assert stored.extra["tensorrt_check"] == "passed (TensorRT 10.3, 11)"
    assert 0 <= fixed.max_abs_diff <= 1e-4
    for photo in photos:
        batch, mask, _ = preprocess([photo], model.preprocess)
        assert mask.any()
        for ours, reference in zip(_run(fixed.path, batch, mask), _torch(model, batch, mask), strict=True):
            np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_letterboxed_onnx_gives_pytorchs_poses_on_the_unpadded_photograph(fixed, tiny_checkpoint, photos):
    """The fixed-size graph with the mask input equals PyTorch run on the photograph with no padding at all."""
    model = load_model(tiny_checkpoint)
    for photo in photos:
        batch, mask, (box,) = preprocess([photo], model.preprocess)
        height, width = box.resized_size
        assert mask.any() and (height, width) != model.preprocess.input_size
        unpadded = np.ascontiguousarray(batch[:, :, :height, :width])
        reference = _torch(model, unpadded, np.zeros((1, height, width), dtype=bool))
        exported = _run(fixed.path, batch, mask)
        ours, theirs = (decode_poses(logits[0], kpts[0], photo.shape[:2]) for logits, kpts in (exported, reference))
        assert len(ours) == len(theirs) > 0
        worst = max(np.abs(a.keypoints[:, :2] - b.keypoints[:, :2]).max() for a, b in zip(ours, theirs, strict=True))
        assert worst < 0.01  # pixels of the original photograph


def test_authors_checkpoint_exports_and_matches_pytorch(tmp_path, tiny_config, photos):
    torch.manual_seed(1)
    state = build_model(tiny_config).state_dict()
    args = argparse.Namespace(backbone="resnet18", hidden_dim=32, nheads=2, num_queries=6, lr_backbone=1e-5)
    checkpoint = tmp_path / "authors.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "args": args, "epoch": 3}, checkpoint)
    result = export_onnx(checkpoint, tmp_path / "authors.onnx", input_size=(96, 128), progress=False)
    assert result.info.extra["source_format"] == "authors" and result.info.preprocess.input_size == (96, 128)
    model = load_model(checkpoint, input_size=(96, 128))
    batch, mask, _ = preprocess(photos[:1], model.preprocess)
    for ours, reference in zip(_run(result.path, batch, mask), _torch(model, batch, mask), strict=True):
        np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_keypoint_refinement_exports_and_matches_pytorch_on_letterboxed_photographs(tmp_path, tiny_config, photos):
    """The refiners sample the finer maps inside the unpadded image (GridSample in the graph): padding must
    shift no keypoint between PyTorch and ONNX Runtime."""
    torch.manual_seed(2)
    model = build_model(tiny_config.replace(keypoint_refinement=True), PreprocessConfig(input_size=(128, 128)))
    for refiner in model.refiners.values():
        torch.nn.init.normal_(refiner.shift.weight, std=0.05)  # a fresh refiner would change nothing
    checkpoint = tmp_path / "refined.pth"
    save_checkpoint(checkpoint, model)
    result = export_onnx(checkpoint, tmp_path / "refined.onnx", progress=False)
    assert "GridSample" in {node.op_type for node in onnx.load(result.path).graph.node}
    model = load_model(checkpoint)
    for photo in photos:
        batch, mask, _ = preprocess([photo], model.preprocess)
        for ours, reference in zip(_run(result.path, batch, mask), _torch(model, batch, mask), strict=True):
            np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_dynamic_batch_runs_any_batch_size_up_to_the_maximum(tmp_path, tiny_checkpoint, photos):
    result = export_onnx(tiny_checkpoint, tmp_path / "dynamic.onnx", batch=None, max_batch=4, progress=False)
    assert result.info.batch is None and result.info.max_batch == 4
    graph = onnx.load(result.path)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    model = load_model(tiny_checkpoint)
    for count in (1, 3):
        batch, mask, _ = preprocess(photos[:count], model.preprocess)
        logits, kpts = _run(result.path, batch, mask)
        assert logits.shape == (count, 6, 3) and kpts.shape == (count, 6, 53)
        np.testing.assert_allclose(kpts, _torch(model, batch, mask)[1], atol=1e-4, rtol=0)


def test_uint8_input_graph_equals_the_float_path(fixed, tmp_path, tiny_checkpoint, photos):
    result = export_onnx(tiny_checkpoint, tmp_path / "uint8.onnx", uint8_input=True, progress=False)
    assert result.info.input_format == UINT8_NHWC
    pixels, pixel_mask, _ = letterbox_batch(photos[:1], (128, 128))
    batch, mask, _ = preprocess(photos[:1], fixed.info.preprocess)
    np.testing.assert_array_equal(pixel_mask, mask)
    for from_pixels, from_floats in zip(_run(result.path, pixels, mask), _run(fixed.path, batch, mask), strict=True):
        np.testing.assert_allclose(from_pixels, from_floats, atol=1e-5, rtol=0)


def test_decoded_outputs_equal_the_shared_decoding(fixed, tmp_path, tiny_checkpoint, photos):
    result = export_onnx(tiny_checkpoint, tmp_path / "decoded.onnx", decode=True, progress=False)
    assert [o.name for o in onnx.load(result.path).graph.output] == ["scores", "keypoints"]
    for photo in photos:
        batch, mask, boxes = preprocess([photo], fixed.info.preprocess)
        scores, keypoints = _run(result.path, batch, mask)
        assert scores.shape == (1, 6) and keypoints.shape == (1, 6, 17, 3)
        logits, kpts = _run(fixed.path, batch, mask)
        expected = decode_poses(logits[0], kpts[0], photo.shape[:2])
        got = poses_from_decoded(scores[0], keypoints[0], boxes[0])
        assert [p.score for p in got] == pytest.approx([p.score for p in expected], abs=1e-5)
        for ours, reference in zip(got, expected, strict=True):
            np.testing.assert_allclose(ours.keypoints, reference.keypoints, atol=1e-2)


def test_a_file_that_is_not_a_checkpoint_is_rejected_and_nothing_is_written(tmp_path):
    bogus = tmp_path / "model.pth"
    bogus.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="model.pth"):
        export_onnx(bogus, tmp_path / "out.onnx", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_unwritable_output_is_a_clear_error(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        export_onnx(tiny_checkpoint, blocker / "model.onnx", progress=False)


def test_onnx_differing_from_pytorch_fails_loudly_and_leaves_no_file(tmp_path, tiny_config, monkeypatch):
    """The guard itself: a tolerance no difference can meet stands in for a graph that drifts from PyTorch."""
    monkeypatch.setattr(export_module, "FP32_TOLERANCE", -1.0)
    model = build_model(tiny_config, PreprocessConfig(input_size=(64, 64)))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(model, tmp_path / "new" / "model.onnx", progress=False)
    assert list(tmp_path.iterdir()) == [], "a failed export leaves neither a file nor an empty folder"
