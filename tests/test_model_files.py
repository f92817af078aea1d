"""Exported model files: damaged ``poet_edge`` metadata, and graphs that disagree with their metadata, fail at load
in one line naming the file and the field (or the input and both shapes), never on the first frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poet.errors import ModelError
from poet.modelinfo import FLOAT_NCHW, METADATA_KEY, UINT8_NHWC, ModelInfo, read_onnx_info
from poet.processing import PreprocessConfig
from poet.runtime import PoseEstimator
from poet.runtime.backends import OnnxRuntimeBackend

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402 - after the importorskip that guards it

QUERIES = 2


def make_onnx(
    path: Path,
    *,
    graph_size: tuple[int, int] = (64, 64),
    graph_batch: int | str = 1,
    graph_format: str = FLOAT_NCHW,
    mask_type: int = TensorProto.BOOL,
    graph_queries: int = QUERIES,
    info: ModelInfo | None = None,
    metadata: str | None = None,
) -> Path:
    """A small poet-edge ONNX with the real input/output contract and a trivial graph.

    ``info`` (default: one that agrees with the graph) or the raw ``metadata`` text goes under ``poet_edge``.
    """
    height, width = graph_size
    if graph_format == UINT8_NHWC:
        images = helper.make_tensor_value_info("images", TensorProto.UINT8, [graph_batch, height, width, 3])
        first = [helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT)]
        pooled_from = "as_float"
    else:
        images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [graph_batch, 3, height, width])
        first, pooled_from = [], "images"
    # The outputs' batch follows the input's (Shape -> Slice), so a dynamic batch really is one.
    nodes = [
        *first,
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "tail_logits"], ["logits_shape"], axis=0),
        helper.make_node("Concat", ["batch", "tail_kpts"], ["kpts_shape"], axis=0),
        helper.make_node("ReduceMean", [pooled_from], ["pooled"], keepdims=0),
        helper.make_node("Expand", ["logit_value", "logits_shape"], ["pred_logits"]),
        helper.make_node("Expand", ["kpt_value", "kpts_shape"], ["pred_kpts"]),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("tail_logits", TensorProto.INT64, [2], [graph_queries, 3]),
        helper.make_tensor("tail_kpts", TensorProto.INT64, [2], [graph_queries, 53]),
        helper.make_tensor("logit_value", TensorProto.FLOAT, [1], [0.0]),
        helper.make_tensor("kpt_value", TensorProto.FLOAT, [1], [0.5]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [images, helper.make_tensor_value_info("mask", mask_type, [graph_batch, height, width])],
        [
            helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [graph_batch, graph_queries, 3]),
            helper.make_tensor_value_info("pred_kpts", TensorProto.FLOAT, [graph_batch, graph_queries, 53]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata is None:
        if info is None:
            dynamic = isinstance(graph_batch, str)
            info = ModelInfo(
                preprocess=PreprocessConfig(input_size=graph_size),
                num_queries=graph_queries,
                input_format=graph_format,
                batch=None if dynamic else int(graph_batch),
                max_batch=4 if dynamic else int(graph_batch),
            )
        metadata = info.to_json()
    model.metadata_props.add(key=METADATA_KEY, value=metadata)
    onnx.save(model, path)
    return path


def good_info(**changes: Any) -> dict[str, Any]:
    """The metadata of the default :func:`make_onnx` model, as a dict to damage."""
    info = ModelInfo(preprocess=PreprocessConfig(input_size=(64, 64)), num_queries=QUERIES).to_dict()
    info.update(changes)
    return info


def one_line(error: pytest.ExceptionInfo, *parts: str) -> str:
    line = str(error.value)
    assert "\n" not in line, line
    for part in parts:
        assert part in line, (part, line)
    return line


def test_models_that_agree_with_their_metadata_load_and_run(tmp_path):
    image = np.full((48, 80, 3), 127, np.uint8)
    for name, options in {
        "float.onnx": {},
        "uint8.onnx": {"graph_format": UINT8_NHWC},
        "fixed2.onnx": {"graph_batch": 2},
        "dynamic.onnx": {"graph_batch": "batch"},
    }.items():
        estimator = PoseEstimator(make_onnx(tmp_path / name, **options), providers=["CPUExecutionProvider"])
        poses = estimator.predict([image] * 3)  # more images than a batch: run in chunks
        assert len(poses) == 3 and all(isinstance(found, list) for found in poses)


# --- the metadata's fields ------------------------------------------------------------------------------------------

BAD_FIELDS = [
    ({"preprocess": {"input_size": [64]}}, "preprocess.input_size must be two whole numbers of at least 32"),
    ({"preprocess": {"input_size": ["64", 64]}}, "preprocess.input_size must be two whole numbers of at least 32"),
    ({"preprocess": {"input_size": [True, 64]}}, "preprocess.input_size must be two whole numbers"),
    ({"preprocess": {"input_size": [16, 16]}}, "got [16, 16] (a list)"),
    ({"preprocess": {"input_size": [64.5, 64]}}, "preprocess.input_size must be two whole numbers"),
    ({"preprocess": [64, 64]}, "preprocess must be an object with input_size, mean and std, got [64, 64] (a list)"),
    ({"preprocess": {"mean": [0.5, 0.5]}}, "preprocess lacks the field 'input_size'"),
    ({"preprocess": {"input_size": [64, 64], "mean": [0.5, 0.5]}}, "preprocess.mean must be 3 finite numbers"),
    ({"preprocess": {"input_size": [64, 64], "mean": [0.5, None, 0.5]}}, "preprocess.mean must be 3 finite numbers"),
    ({"preprocess": {"input_size": [64, 64], "std": [0.2, 0.2, 0]}}, "preprocess.std must be above 0"),
    ({"preprocess": {"input_size": [64, 64], "std": [0.2, 0.2, -1]}}, "preprocess.std must be above 0"),
    ({"num_queries": 0}, "num_queries must be a whole number of at least 1, got 0"),
    ({"num_queries": "2"}, "num_queries must be a whole number of at least 1, got '2' (a string)"),
    ({"num_queries": 2.5}, "num_queries must be a whole number of at least 1, got 2.5"),
    ({"batch": 0, "max_batch": 0}, "batch (null for a dynamic batch) must be a whole number of at least 1, got 0"),
    ({"batch": 1, "max_batch": 4}, "batch 1 is fixed, so max_batch must be 1 too, got 4"),
    ({"batch": None, "max_batch": None}, "max_batch must be a whole number of at least 1, got None"),
    ({"input_format": "rgb"}, "input_format must be one of float32-nchw-rgb, uint8-nhwc-bgr, got 'rgb' (a string)"),
    ({"precision": "fp64"}, "precision must be one of fp32, fp16, int8, got 'fp64'"),
    ({"target": "gpu"}, "target (null unless int8) must be one of tensorrt, cpu, openvino, got 'gpu'"),
    ({"decoded": "yes"}, "decoded must be true or false, got 'yes' (a string)"),
    ({"float_ops": "LayerNormalization"}, "float_ops must be a list of op type names"),
    ({"extra": [1]}, "extra must be a JSON object, got [1] (a list)"),
    ({"outputs": ["scores", "keypoints"]}, "outputs must be ['pred_logits', 'pred_kpts'] (decoded is false)"),
    ({"format_version": 2}, "model info format_version 2 is not the supported 1"),
    ({"format_version": True}, "model info format_version True is not the supported 1"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_FIELDS)
def test_model_info_from_dict_names_the_bad_field(changes, message):
    with pytest.raises(ValueError) as info:
        ModelInfo.from_dict(good_info(**changes))
    one_line(info, message)


def test_model_info_lacking_a_field_or_not_an_object():
    info = good_info()
    del info["num_queries"]
    with pytest.raises(ValueError, match="model info lacks the field 'num_queries'"):
        ModelInfo.from_dict(info)
    with pytest.raises(ValueError, match=r"model info must be a JSON object, got \[1, 2\] \(a list\)"):
        ModelInfo.from_json("[1, 2]")
    with pytest.raises(ValueError, match=r"model info is not valid JSON \(Expecting .* at line 1 column \d+\)"):
        ModelInfo.from_json('{"format_version": 1,')
    assert ModelInfo.from_dict(good_info()) == ModelInfo(PreprocessConfig(input_size=(64, 64)), QUERIES)


@pytest.mark.parametrize(
    ("changes", "message"), [BAD_FIELDS[0], BAD_FIELDS[9], BAD_FIELDS[12], BAD_FIELDS[15], BAD_FIELDS[17]]
)
def test_damaged_metadata_in_an_onnx_file_names_the_file_and_field(tmp_path, changes, message):
    path = make_onnx(tmp_path / "damaged.onnx", metadata=json.dumps(good_info(**changes)))
    with pytest.raises(ModelError) as info:
        read_onnx_info(path)
    one_line(info, f"{path}: damaged 'poet_edge' metadata: ", message)
    with pytest.raises(ModelError) as info:  # the torch-free runtime reads it through ONNX Runtime, the same way
        PoseEstimator(path, providers=["CPUExecutionProvider"])
    one_line(info, f"{path}: damaged 'poet_edge' metadata: ", message)


def test_metadata_that_is_not_json(tmp_path):
    path = make_onnx(tmp_path / "text.onnx", metadata="input_size: 64x64")
    with pytest.raises(ModelError) as info:
        PoseEstimator(path, providers=["CPUExecutionProvider"])
    one_line(info, "text.onnx: damaged 'poet_edge' metadata: model info is not valid JSON (Expecting value at line 1")
    path = make_onnx(
        tmp_path / "nan.onnx",
        metadata=json.dumps(good_info(preprocess={"input_size": [64, 64], "std": [float("nan")] * 3})),
    )
    with pytest.raises(ModelError) as info:
        read_onnx_info(path)
    one_line(info, "nan.onnx: damaged 'poet_edge' metadata: preprocess.std must be 3 finite numbers")


# --- the graph against its metadata ---------------------------------------------------------------------------------


def load(path: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])


def info_for(size: tuple[int, int] = (64, 64), **changes: Any) -> ModelInfo:
    return ModelInfo(preprocess=PreprocessConfig(input_size=size), num_queries=QUERIES).replace(**changes)


def test_input_size_disagreeing_with_the_metadata_fails_at_load(tmp_path):
    path = make_onnx(tmp_path / "small.onnx", graph_size=(64, 64), info=info_for((128, 128)))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(
        info, f"{path}: input 'images' has shape [1, 3, 64, 64] in the graph but its metadata says [1, 3, 128, 128]"
    )


def test_layout_and_dtype_disagreeing_with_the_metadata_fail_at_load(tmp_path):
    path = make_onnx(tmp_path / "float.onnx", info=info_for(input_format=UINT8_NHWC))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(
        info,
        f"{path}: input 'images' is float32 [1, 3, 64, 64] but its metadata says uint8 [1, 64, 64, 3]",
        "(uint8-nhwc-bgr)",
    )
    path = make_onnx(tmp_path / "uint8.onnx", graph_format=UINT8_NHWC, info=info_for())
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, "input 'images' is uint8 [1, 64, 64, 3] but its metadata says float32 [1, 3, 64, 64]")
    path = make_onnx(tmp_path / "mask.onnx", mask_type=TensorProto.FLOAT, info=info_for())
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, "mask.onnx: input 'mask' is float32 [1, 64, 64] but its metadata says bool")


def test_batch_disagreeing_with_the_metadata_fails_at_load(tmp_path):
    path = make_onnx(tmp_path / "batch2.onnx", graph_batch=2, info=info_for(batch=1, max_batch=1))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, "batch2.onnx: input 'images' has shape [2, 3, 64, 64] in the graph but its metadata says [1, 3,")
    path = make_onnx(tmp_path / "fixed.onnx", graph_batch=2, info=info_for(batch=None, max_batch=4))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, "input 'images' has shape [2, 3, 64, 64] in the graph but its metadata says [batch<=4, 3, 64, 64]")
    # A dynamic graph takes the metadata's fixed batch, and a fixed batch of 1 a dynamic batch of at most 1.
    assert (
        load(make_onnx(tmp_path / "dyn.onnx", graph_batch="batch", info=info_for(batch=2, max_batch=2))).max_batch == 2
    )
    assert load(make_onnx(tmp_path / "one.onnx", graph_batch=1, info=info_for(batch=None, max_batch=1))).max_batch == 1


def test_queries_disagreeing_with_the_metadata_fail_at_load(tmp_path):
    path = make_onnx(tmp_path / "queries.onnx", graph_queries=2, info=info_for(num_queries=5))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(
        info, "queries.onnx: output 'pred_logits' has shape [1, 2, 3] in the graph but its metadata says [1, 5, 3]"
    )


def test_a_checkpoint_renamed_to_onnx_is_named_as_one(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, f"{path} is not a loadable ONNX model: it is a PyTorch checkpoint", "export it with poet-export")
    path.write_bytes(b"\x00not protobuf")
    with pytest.raises(ModelError) as info:
        load(path)
    one_line(info, f"{path} is not a loadable ONNX model: [ONNXRuntimeError]")


def test_poet_run_prints_one_error_line_for_a_mismatched_model(tmp_path, capsys):
    import cv2

    from poet.runtime.cli import main

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 90, np.uint8))
    model = make_onnx(tmp_path / "small.onnx", graph_size=(64, 64), info=info_for((128, 128)))
    assert main([str(image), "--model", str(model), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "small.onnx: input 'images' has shape [1, 3, 64, 64] in the graph but its metadata says" in err
