"""The one variant table: names and file names unique, consistent with the runtime's suffix table."""

from __future__ import annotations

from pathlib import Path

import pytest

from poet.errors import PoetError
from poet.modelinfo import INT8_TARGETS, PRECISIONS
from poet.optimize.variants import VARIANT_NAMES, VARIANTS, find_variant, onnx_variant, variant
from poet.runtime.backends import BACKEND_BY_SUFFIX


def test_names_and_files_are_unique_and_each_row_is_a_real_precision():
    assert len(set(VARIANT_NAMES)) == len(VARIANTS)
    deployed = [row for row in VARIANTS if row.backend not in ("torch", "openvino")]
    assert len({row.suffix for row in deployed}) == len(deployed)
    for row in VARIANTS:
        assert row.precision in PRECISIONS
        assert (row.int8_target in INT8_TARGETS) == (row.precision == "int8")
        assert (row.float_precision is not None) == (row.backend == "openvino")


def test_openvino_rows_read_the_fp32_onnx_and_their_own_int8_layout():
    rows = [row for row in VARIANTS if row.backend == "openvino"]
    assert [row.name for row in rows] == ["openvino-fp32", "openvino-bf16", "openvino-int8", "openvino-int8-bf16"]
    fp32, int8 = find_variant("onnxruntime", "fp32").path(Path("m.onnx")), Path("m.int8-openvino.onnx")
    assert [row.path(Path("m.onnx")) for row in rows] == [fp32, fp32, int8, int8]
    assert find_variant("openvino", "int8", "openvino").name == onnx_variant("int8", "openvino").name == "openvino-int8"
    assert onnx_variant("int8", "cpu").name == "onnx-int8-cpu" and onnx_variant("fp16").name == "onnx-fp16"
    assert [row.float_precision for row in rows] == ["fp32", "bf16", "fp32", "bf16"]
    deployed = {row.suffix for row in VARIANTS if row.backend not in ("torch", "openvino")}
    assert rows[2].suffix not in deployed  # NNCF's INT8 file is no other row's


def test_every_deployed_file_opens_with_the_backend_its_row_names():
    for row in VARIANTS:
        if row.backend in ("torch", "openvino"):  # OpenVINO is asked for by name: its files are ONNX Runtime's
            continue
        path = row.path(Path("out/model.onnx"))
        assert path.parent == Path("out") and path.name.startswith("model.")
        assert BACKEND_BY_SUFFIX[path.suffix] == row.backend, row.name


def test_rows_are_found_by_backend_and_precision():
    assert find_variant("onnxruntime", "int8", "cpu").path(Path("m.onnx")) == Path("m.int8-cpu.onnx")
    assert find_variant("onnxruntime", "fp16").path(Path("m.onnx")) == Path("m.fp16.onnx")
    assert find_variant("tensorrt", "int8", "tensorrt").name == "trt-int8"
    assert find_variant("onnxruntime", "fp32", "cpu").int8_target is None  # a target only matters for INT8
    with pytest.raises(PoetError, match="INT8 variant needs a target"):
        find_variant("onnxruntime", "int8")
    with pytest.raises(PoetError, match="no tensorrt variant in int8 for cpu"):
        find_variant("tensorrt", "int8", "cpu")


def test_an_unknown_name_lists_the_valid_ones():
    assert variant("onnx-fp16").suffix == ".fp16.onnx" and variant("trt-int8").backend == "tensorrt"
    with pytest.raises(PoetError, match="unknown variant 'onnx-int4'; valid variants: torch, torch-fp16"):
        variant("onnx-int4")
