"""Will TensorRT's ONNX parser take this graph? Checked here, on machines without TensorRT.

No machine that makes the ONNX has to have TensorRT, and a graph the parser refuses is otherwise only
found on the user's GPU or Jetson. The rules are those of onnx-tensorrt's operator table for each
TensorRT release line (data in ``tensorrt_onnx_ops.json``, with its source) plus the parser's own
checks that the table only states in prose: the opset range, UINT8 only as a network input or output
(and a UINT8 input cast to float before use), and explicit quantization as TensorRT takes it
(INT8/FP8/INT4 with zero points 0, constant positive scales, per-channel scales only on weights).
Needs onnx, not TensorRT.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from poet.errors import PoetError
from poet.modelinfo import load_onnx

logger = logging.getLogger("poet")

TABLE_FILE = "tensorrt_onnx_ops.json"
# Inputs that carry shapes, indices, axes or conditions rather than the op's data, so their type is not the
# op's data type (ONNX's own type constraints cover them); listed by position.
_NON_DATA_INPUTS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}),
    "Expand": frozenset({1}),
    "Tile": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Gather": frozenset({1}),
    "GatherElements": frozenset({1}),
    "GatherND": frozenset({1}),
    "ScatterElements": frozenset({1}),
    "ScatterND": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
    "Split": frozenset({1}),
    "Pad": frozenset({1, 3}),
    "Resize": frozenset({1, 2, 3}),
    "CumSum": frozenset({1}),
    "TopK": frozenset({1}),
    "Where": frozenset({0}),
    "ConstantOfShape": frozenset({0}),
    "OneHot": frozenset({0, 1}),
    "QuantizeLinear": frozenset({1, 2}),
    "DequantizeLinear": frozenset({1, 2}),
    **{op: frozenset({1}) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1")},
    **{op: frozenset({1}) for op in ("ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}
QUANTIZED_TYPES = frozenset({TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1})
SCALE_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16})
FLOAT_TYPES = SCALE_TYPES


class GraphCheckError(PoetError):
    """A graph TensorRT's ONNX parser would refuse."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: which TensorRT table, which node (or tensor), the rule's name and what is wrong."""

    tensorrt: str
    rule: str
    node: str
    op: str
    message: str

    def describe(self) -> str:
        where = f"node {self.node!r} ({self.op})" if self.op else f"{self.node}"
        return f"TensorRT {self.tensorrt}: {where}: {self.message} [rule {self.rule}]"


@cache
def tables() -> dict[str, dict[str, Any]]:
    """The operator tables by TensorRT release line ("10.3", "11"), from the JSON shipped with poet-edge."""
    text = resources.files("poet.optimize").joinpath(TABLE_FILE).read_text()
    return dict(json.loads(text)["tables"])


def _type_name(elem_type: int) -> str:
    return str(TensorProto.DataType.Name(elem_type))


class _Graph:
    """The facts the rules read: tensor types (from shape inference), constants, producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except (onnx.shape_inference.InferenceError, ValueError):
            inferred = model
        graph = inferred.graph
        self.model = model
        self.nodes = list(model.graph.node)
        self.inputs = {value.name: value.type.tensor_type.elem_type for value in graph.input}
        self.outputs = {value.name: value.type.tensor_type.elem_type for value in graph.output}
        self.types: dict[str, int] = {value.name: value.type.tensor_type.elem_type for value in graph.value_info}
        self.types.update(self.inputs)
        self.types.update(self.outputs)
        self.constants: dict[str, TensorProto] = {init.name: init for init in graph.initializer}
        for init in graph.initializer:
            self.types[init.name] = init.data_type
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
                    self.types[node.output[0]] = value.data_type

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def type_of(self, name: str) -> int:
        return self.types.get(name, TensorProto.UNDEFINED)


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports (0 if none)."""
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else "?")


def _check_opset(graph: _Graph, version: str, table: dict[str, Any]) -> Iterator[Violation]:
    low, high = table["opsets"]
    opset = default_opset(graph.model)
    if not low <= opset <= high:
        yield Violation(
            version, "opset", "the model", "", f"opset {opset} is outside the {low}-{high} this parser imports"
        )


def _check_ops(graph: _Graph, version: str, table: dict[str, Any]) -> Iterator[Violation]:
    """Each node's op is in the table; its data inputs' types, Cast targets, outputs and constant inputs fit it."""
    for node in graph.nodes:
        name, op = _name(node), node.op_type
        if node.domain not in ("", "ai.onnx"):
            yield Violation(version, "op-supported", name, op, f"op of domain {node.domain!r} needs a TensorRT plugin")
            continue
        entry = table["ops"].get(op)
        if entry is None or not entry["supported"]:
            yield Violation(version, "op-supported", name, op, f"the parser does not import {op}")
            continue
        allowed = {getattr(TensorProto, type_name) for type_name in entry["types"]}
        skipped = _NON_DATA_INPUTS.get(op, frozenset())
        for position, tensor in enumerate(node.input):
            elem_type = graph.type_of(tensor)
            if not tensor or position in skipped or elem_type == TensorProto.UNDEFINED or elem_type in allowed:
                continue
            yield Violation(
                version,
                "op-types",
                name,
                op,
                f"input {tensor!r} is {_type_name(elem_type)}; {op} takes {', '.join(entry['types'])}",
            )
        if op == "Cast" and _attribute(node, "to", 0) not in allowed:
            target = _type_name(_attribute(node, "to", 0))
            yield Violation(version, "op-types", name, op, f"casts to {target}; Cast takes {', '.join(entry['types'])}")
        used_outputs = [output for output in node.output if output]
        if len(used_outputs) > entry.get("max_outputs", len(used_outputs)):
            yield Violation(version, "op-outputs", name, op, f"only the first output of {op} is supported")
        for position in entry.get("constant_inputs", ()):
            if position < len(node.input) and node.input[position] and node.input[position] not in graph.constants:
                yield Violation(
                    version,
                    "constant-input",
                    name,
                    op,
                    f"input {position} ({node.input[position]!r}) must be a constant (an initializer)",
                )
        for attribute, values in entry.get("attributes", {}).items():
            value = _attribute(node, attribute, None)
            if value is not None and value not in values:
                yield Violation(
                    version,
                    "op-attribute",
                    name,
                    op,
                    f"{attribute}={value!r} is not one of {', '.join(map(str, values))}",
                )


def _check_uint8(graph: _Graph, version: str) -> Iterator[Violation]:
    """UINT8 only as a network input or output, and a UINT8 input read only by a Cast to float."""
    boundary = set(graph.inputs) | set(graph.outputs)
    for tensor, elem_type in graph.types.items():
        if elem_type != TensorProto.UINT8 or tensor in boundary or tensor in graph.constants:
            continue
        producer = graph.producer.get(tensor)
        yield Violation(
            version,
            "uint8-intermediate",
            _name(producer) if producer else tensor,
            producer.op_type if producer else "",
            f"makes the UINT8 tensor {tensor!r}: TensorRT takes UINT8 only as a network input or output",
        )
    for tensor, elem_type in graph.inputs.items():
        if elem_type != TensorProto.UINT8:
            continue
        for consumer in graph.consumers.get(tensor, []):
            if consumer.op_type != "Cast" or _attribute(consumer, "to", 0) not in FLOAT_TYPES:
                yield Violation(
                    version,
                    "uint8-input-cast",
                    _name(consumer),
                    consumer.op_type,
                    f"reads the UINT8 input {tensor!r} directly; cast it to float first",
                )


def _check_qdq(graph: _Graph, version: str) -> Iterator[Violation]:
    """Explicit quantization as TensorRT builds it from Q/DQ pairs."""
    for node in graph.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name, op = _name(node), node.op_type
        quantized_tensor = node.output[0] if op == "QuantizeLinear" else node.input[0]
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        quantized = graph.type_of(zero_point) if zero_point else graph.type_of(quantized_tensor)
        if quantized not in QUANTIZED_TYPES and quantized != TensorProto.UNDEFINED:
            yield Violation(
                version, "qdq-type", name, op, f"quantizes to {_type_name(quantized)}; TensorRT takes INT8, FP8 or INT4"
            )
        scale = graph.constant(node.input[1])
        if scale is None:
            yield Violation(version, "qdq-scale", name, op, f"scale {node.input[1]!r} must be a constant (initializer)")
            continue
        if graph.type_of(node.input[1]) not in SCALE_TYPES:
            yield Violation(
                version, "qdq-scale", name, op, f"scale is {_type_name(graph.type_of(node.input[1]))}, not a float type"
            )
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            yield Violation(version, "qdq-scale", name, op, "scale must be finite and positive")
        if zero_point is not None:
            values = graph.constant(zero_point)
            if values is None or np.any(values.astype(np.float64) != 0):
                yield Violation(version, "qdq-zero-point", name, op, "zero point must be a constant 0")
        if scale.size > 1:
            yield from _check_axis(graph, version, node, scale)


def _weight(graph: _Graph, node: onnx.NodeProto) -> np.ndarray | None:
    """The constant a Q or DQ node quantizes (for a DQ, also through the Q that feeds it); None for activations."""
    value = graph.constant(node.input[0])
    source = graph.producer.get(node.input[0])
    if (
        value is None
        and node.op_type == "DequantizeLinear"
        and source is not None
        and source.op_type == "QuantizeLinear"
    ):
        value = graph.constant(source.input[0])
    return value


def _check_axis(graph: _Graph, version: str, node: onnx.NodeProto, scale: np.ndarray) -> Iterator[Violation]:
    """Per-channel scales: only on constant weights, one scale per channel of the quantization axis."""
    name, op = _name(node), node.op_type
    weight = _weight(graph, node)
    if weight is None:
        yield Violation(version, "qdq-axis", name, op, "activations take one scale (per-tensor), not per-channel")
        return
    axis = int(_attribute(node, "axis", 1))
    if not -weight.ndim <= axis < weight.ndim:
        yield Violation(version, "qdq-axis", name, op, f"axis {axis} is outside the weight's {weight.ndim} dimensions")
    elif _attribute(node, "block_size", 0) == 0 and (scale.ndim != 1 or scale.size != weight.shape[axis]):
        yield Violation(
            version, "qdq-axis", name, op, f"{scale.size} scales for the {weight.shape[axis]} channels of axis {axis}"
        )


def check_graph(model: onnx.ModelProto, versions: Sequence[str] | None = None) -> list[Violation]:
    """Every rule broken by ``model`` for each TensorRT table in ``versions`` (default: all); empty when it passes."""
    graph = _Graph(model)
    known = tables()
    violations: list[Violation] = []
    for version in versions or list(known):
        if version not in known:
            raise GraphCheckError(f"no TensorRT table {version!r}; known: {', '.join(known)}")
        table = known[version]
        for rules in (
            _check_opset(graph, version, table),
            _check_uint8(graph, version),
            _check_ops(graph, version, table),
            _check_qdq(graph, version),
        ):
            violations.extend(rules)
    return violations


def summary(violations: Iterable[Violation], path: str | Path) -> str:
    """One line: the first broken rule, naming the file, the node and the rule, and how many more there are."""
    found = list(violations)
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{path} would not parse in TensorRT: {found[0].describe()}{more}"


def require_tensorrt_graph(model: onnx.ModelProto, path: str | Path, versions: Sequence[str] | None = None) -> None:
    """Raise :class:`GraphCheckError` (one line) unless every TensorRT table accepts ``model``."""
    violations = check_graph(model, versions)
    if violations:
        raise GraphCheckError(summary(violations, path))


def tensorrt_verdict(model: onnx.ModelProto, path: str | Path) -> str:
    """What poet-edge records in an ONNX's model info: ``passed (TensorRT 10.3, 11)``, or the one-line failure,
    which is also logged as a warning (the ONNX still serves ONNX Runtime; poet-build-engine refuses it)."""
    violations = check_graph(model)
    if not violations:
        return f"passed (TensorRT {', '.join(tables())})"
    verdict = summary(violations, path)
    logger.warning("%s", verdict)
    return verdict


def check_onnx_file(path: str | Path, versions: Sequence[str] | None = None) -> None:
    """:func:`require_tensorrt_graph` on a poet-edge ONNX file."""
    model, _ = load_onnx(path)
    require_tensorrt_graph(model, path, versions)
