"""The TensorRT graph check: poet-edge's own exports pass it, and each rule fails on a small graph made to break it.

The rules are TensorRT's ONNX parser's (onnx-tensorrt's operator table per release line, kept in
``optimize/tensorrt_onnx_ops.json``); no TensorRT is needed to run them.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from poet.optimize.tensorrt_check import GraphCheckError, check_graph, require_tensorrt_graph, tables  # noqa: E402


def model_of(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return model


def tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def rules(model: onnx.ModelProto, version: str = "10.3") -> set[tuple[str, str]]:
    return {(v.rule, v.node) for v in check_graph(model, [version])}


def test_tables_cover_both_release_lines_and_name_their_source():
    known = tables()
    assert set(known) == {"10.3", "11"}
    assert known["10.3"]["opsets"] == [9, 20] and known["11"]["opsets"] == [9, 24]
    for table in known.values():
        assert "onnx-tensorrt docs/operators.md" in table["source"]
        assert table["ops"]["LayerNormalization"]["supported"] and table["ops"]["CumSum"]["constant_inputs"] == [1]
        assert not table["ops"]["Unique"]["supported"]


def test_a_float_graph_of_supported_ops_passes():
    model = model_of(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Softmax", ["r"], ["y"], name="sm")],
        [tensor("x", TensorProto.FLOAT, [1, 4])],
        [tensor("y", TensorProto.FLOAT, [1, 4])],
    )
    assert check_graph(model) == []
    require_tensorrt_graph(model, "ok.onnx")


def flip_then_cast(cast_first: bool) -> onnx.ModelProto:
    """The uint8 input's BGR->RGB flip (a reversed Slice on the last axis) before or after its cast to float."""
    constants = [
        numpy_helper.from_array(np.array([-1], np.int64), "starts"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "ends"),
        numpy_helper.from_array(np.array([3], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "steps"),
    ]
    cast = helper.make_node("Cast", ["images" if cast_first else "flipped"], ["floats"], to=TensorProto.FLOAT)
    cast.name = "cast"
    flip = helper.make_node(
        "Slice", ["floats" if cast_first else "images", "starts", "ends", "axes", "steps"], ["flipped"], name="flip"
    )
    nodes = [cast, flip] if cast_first else [flip, cast]
    output = "flipped" if cast_first else "floats"
    return model_of(
        nodes,
        [tensor("images", TensorProto.UINT8, [1, 8, 8, 3])],
        [tensor(output, TensorProto.FLOAT, [1, 8, 8, 3])],
        constants,
    )


def test_uint8_sliced_before_its_cast_breaks_the_uint8_rules_and_cast_first_passes():
    broken = rules(flip_then_cast(cast_first=False))
    assert ("uint8-intermediate", "flip") in broken  # the parser's "no UINT8 intermediate tensors"
    assert ("uint8-input-cast", "flip") in broken
    assert ("op-types", "flip") in broken  # Slice takes no UINT8 either
    assert check_graph(flip_then_cast(cast_first=True)) == []


def test_failure_is_one_line_naming_the_file_node_and_rule():
    with pytest.raises(GraphCheckError) as raised:
        require_tensorrt_graph(flip_then_cast(cast_first=False), "model.onnx")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("model.onnx would not parse in TensorRT: TensorRT 10.3: node 'flip' (Slice): ")
    assert "[rule " in message and "more)" in message


def test_opset_outside_the_parsers_range():
    model = model_of(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [tensor("x", TensorProto.FLOAT, [2])],
        [tensor("y", TensorProto.FLOAT, [2])],
        opset=22,
    )
    assert ("opset", "the model") in rules(model, "10.3")
    assert rules(model, "11") == set()


def test_unsupported_op_and_foreign_domain():
    unique = model_of(
        [helper.make_node("Unique", ["x"], ["y"], name="unique")],
        [tensor("x", TensorProto.FLOAT, [4])],
        [tensor("y", TensorProto.FLOAT, [None])],
    )
    assert ("op-supported", "unique") in rules(unique)
    custom = model_of(
        [helper.make_node("FusedGemm", ["x", "x"], ["y"], name="fused", domain="com.microsoft")],
        [tensor("x", TensorProto.FLOAT, [2, 2])],
        [tensor("y", TensorProto.FLOAT, [2, 2])],
    )
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert ("op-supported", "fused") in rules(custom)


def test_data_type_the_op_does_not_take_and_cast_to_double():
    model = model_of(
        [
            helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
            helper.make_node("Relu", ["d"], ["y"], name="relu"),
        ],
        [tensor("x", TensorProto.FLOAT, [2])],
        [tensor("y", TensorProto.DOUBLE, [2])],
    )
    assert {("op-types", "to_double"), ("op-types", "relu")} <= rules(model)


def test_second_output_of_layer_normalization():
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    model = model_of(
        [helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln")],
        [tensor("x", TensorProto.FLOAT, [2, 4])],
        [tensor("y", TensorProto.FLOAT, [2, 4]), tensor("mean", TensorProto.FLOAT, [2, 1])],
        [scale],
    )
    assert ("op-outputs", "ln") in rules(model)


def test_cumsum_axis_computed_at_run_time():
    model = model_of(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum")],
        [tensor("x", TensorProto.FLOAT, [2, 4]), tensor("axis", TensorProto.INT64, [])],
        [tensor("y", TensorProto.FLOAT, [2, 4])],
    )
    assert ("constant-input", "cumsum") in rules(model)


def test_resize_mode_the_parser_lacks():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    model = model_of(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="resize")],
        [tensor("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [tensor("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        [scales],
    )
    assert ("op-attribute", "resize") in rules(model)


def quantized_matmul(zero_point, scale=0.1, activation_scale_shape=(), scale_from_input=False, axis=1):
    """x -> Q -> DQ -> MatMul with a Q/DQ'd constant weight: the layout ModelOpt writes for TensorRT."""
    weight = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"),
        numpy_helper.from_array(np.asarray(zero_point), "x_zero"),
    ]
    inputs = [tensor("x", TensorProto.FLOAT, [2, 3])]
    if scale_from_input:
        inputs.append(tensor("x_scale", TensorProto.FLOAT, []))
    else:
        initializers.append(numpy_helper.from_array(np.full(activation_scale_shape, scale, np.float32), "x_scale"))
    quantized = helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q_x")
    if activation_scale_shape:
        quantized.attribute.append(helper.make_attribute("axis", axis))
    nodes = [
        quantized,
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xf"], name="dq_x", axis=axis),
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], name="q_w", axis=1),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wf"], name="dq_w", axis=1),
        helper.make_node("MatMul", ["xf", "wf"], ["y"], name="matmul"),
    ]
    return model_of(nodes, inputs, [tensor("y", TensorProto.FLOAT, [2, 4])], initializers, opset=19)


def test_symmetric_int8_with_per_channel_weights_passes():
    assert check_graph(quantized_matmul(np.int8(0))) == []


def test_qdq_rules():
    assert ("qdq-type", "q_x") in rules(quantized_matmul(np.uint8(128)))  # ONNX Runtime's CPU layout
    assert ("qdq-zero-point", "q_x") in rules(quantized_matmul(np.int8(3)))
    assert ("qdq-scale", "dq_x") in rules(quantized_matmul(np.int8(0), scale=-0.1))
    assert ("qdq-scale", "q_x") in rules(quantized_matmul(np.int8(0), scale_from_input=True))
    per_channel = rules(quantized_matmul(np.zeros(3, np.int8), activation_scale_shape=(3,)))
    assert ("qdq-axis", "q_x") in per_channel


def test_every_tiny_variant_passes(tmp_path, tiny_checkpoint, coco):
    """fp32, fp16 and INT8 for TensorRT (FP16 and FP32 float type), uint8 input and a dynamic batch."""
    pytest.importorskip("modelopt")
    from poet.modelinfo import load_onnx
    from poet.optimize.export import export_onnx
    from poet.optimize.precision import make_variant

    fp32 = export_onnx(tiny_checkpoint, tmp_path / "m.onnx", uint8_input=True, batch=None, max_batch=2, progress=False)
    assert fp32.info.extra["tensorrt_check"] == "passed (TensorRT 10.3, 11)"
    variants = [make_variant(fp32.path, tmp_path / "m.fp16.onnx", "fp16", progress=False)]
    for float_type in ("fp16", "fp32"):
        variants.append(
            make_variant(
                fp32.path,
                tmp_path / f"m.int8-{float_type}.onnx",
                "int8",
                calibration=coco / "val2017",
                num_calib=4,
                int8_float=float_type,
                cache_dir=tmp_path / "cache",
                progress=False,
            )
        )
    for variant in variants:
        model, info = load_onnx(variant.path)
        assert check_graph(model) == [], variant.path
        assert info.extra["tensorrt_check"] == "passed (TensorRT 10.3, 11)"
    fp16_types = {init.data_type for init in onnx.load(variants[1].path).graph.initializer}
    assert TensorProto.FLOAT16 in fp16_types  # the FP16 float type really is in the graph
