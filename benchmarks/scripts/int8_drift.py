"""Why OpenVINO and ONNX Runtime part ways on one INT8 Q/DQ model: which fused op moves the keypoints.

Both engines run the same INT8 file (OpenVINO with fp32 float ops) on the same letterboxed images, and their
keypoints are compared with the FP32 model's (ONNX Runtime) on the queries FP32 calls people (person score above
0.3, as decoding scores them), in pixels of the model's input. Then, one at a time, each Conv, MatMul and Gemm
output is made a graph output: a tensor that must be kept stops OpenVINO from fusing that op with what follows it,
and the ops whose blocking brings OpenVINO back to ONNX Runtime's error are where OpenVINO's compiled graph
computes something else. For the first of them it prints the op OpenVINO compiled it into, plain and blocked (its
layer type and the ONNX nodes fused into it).

    python benchmarks/scripts/int8_drift.py runs/quickstart/variants/model.int8-cpu.onnx \\
        --fp32 runs/quickstart/variants/model.onnx --images runs/quickstart/data/val2017 --limit 40
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov

from poet.images import list_images, read_image
from poet.modelinfo import IMAGES, MASK
from poet.processing import decode_keypoints, person_scores
from poet.runtime import PoseEstimator

PERSON = 0.3
BLOCKED_OP_TYPES = ("Conv", "MatMul", "Gemm")
Feeds = dict[str, np.ndarray]
Outputs = tuple[np.ndarray, np.ndarray]  # pred_logits, pred_kpts


def keypoint_error(reference: Sequence[Outputs], outputs: Sequence[Outputs], size: int) -> np.ndarray:
    """|x, y| differences (input px) of every keypoint of the reference's people."""
    parts = []
    for (logits, kpts), (_, other) in zip(reference, outputs, strict=True):
        scores, labels = person_scores(logits)
        people = (labels == 1) & (scores > PERSON)  # the queries decoding would call people
        difference = decode_keypoints(kpts)[..., :2] - decode_keypoints(other)[..., :2]
        parts.append(np.abs(difference)[people].ravel() * size)
    return np.concatenate(parts)


def onnxruntime_runner(path: Path) -> Callable[[Feeds], Outputs]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feeds: tuple(session.run(["pred_logits", "pred_kpts"], feeds))


def openvino_compiled(path: Path) -> Any:
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def openvino_runner(compiled: Any) -> Callable[[Feeds], Outputs]:
    logits, kpts = compiled.output("pred_logits"), compiled.output("pred_kpts")

    def run(feeds: Feeds) -> Outputs:
        results = compiled(feeds)
        return results[logits], results[kpts]

    return run


def blocked(model: onnx.ModelProto, tensor: str, folder: Path) -> Path:
    """``model`` with ``tensor`` also a graph output, saved in ``folder``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    path = folder / "blocked.onnx"
    onnx.save(copy, str(path))
    return path


def compiled_ops(compiled: Any, node: str) -> list[str]:
    """OpenVINO's compiled ops made from ONNX node ``node`` (its name, or a part of it such as
    ``<node>/WithoutBiases``): their layer type, precision and the nodes fused into them."""
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        if any(name.startswith(node) for name in names.split(",")):
            found.append(f"{info['layerType'].astype(str)} {info['runtimePrecision'].astype(str)}: {names}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="INT8 Q/DQ ONNX (model.int8-cpu.onnx)")
    parser.add_argument("--fp32", type=Path, required=True, help="the FP32 ONNX it was made from")
    parser.add_argument("--images", type=Path, required=True, help="images to run")
    parser.add_argument("--limit", type=int, default=40, help="images (default: 40)")
    parser.add_argument("--show", type=int, default=8, help="ops listed, best first (default: 8)")
    args = parser.parse_args()

    estimator = PoseEstimator(args.model)
    size = estimator.info.preprocess.input_size[1]
    feeds = []
    for path in list_images(args.images)[: args.limit]:
        (images, mask), _ = estimator.prepare([read_image(path)])
        feeds.append({IMAGES: images.copy(), MASK: mask.copy()})
    reference = [onnxruntime_runner(args.fp32)(f) for f in feeds]

    def error(run: Callable[[Feeds], Outputs]) -> np.ndarray:
        return keypoint_error(reference, [run(f) for f in feeds], size)

    engines = {
        "ONNX Runtime": error(onnxruntime_runner(args.model)),
        "OpenVINO": error(openvino_runner(openvino_compiled(args.model))),
    }
    print(f"{args.model} against {args.fp32}, {len(feeds)} images; keypoints of FP32's people (p > {PERSON:g}), px\n")
    print("| engine | mean | p99 | max |\n|---|---:|---:|---:|")
    for name, values in engines.items():
        print(f"| {name} | {values.mean():.3f} | {np.percentile(values, 99):.2f} | {values.max():.2f} |")

    model = onnx.load(str(args.model))
    trials = []
    with tempfile.TemporaryDirectory() as temp:
        for node in model.graph.node:
            if node.op_type in BLOCKED_OP_TYPES:
                compiled = openvino_compiled(blocked(model, node.output[0], Path(temp)))
                trials.append((float(error(openvino_runner(compiled)).mean()), node))
        trials.sort(key=lambda trial: trial[0])
        print(f"\nOpenVINO with one op's output kept (its fusion blocked), best {args.show} of {len(trials)}:\n")
        print("| op | keypoint error mean px |\n|---|---:|")
        for mean, node in trials[: args.show]:
            print(f"| {node.name} ({node.op_type}) | {mean:.3f} |")
        best = trials[0][1]
        print(f"\n{best.name} as OpenVINO compiles it, plain:")
        for line in compiled_ops(openvino_compiled(args.model), best.name) or ["(no compiled op names it)"]:
            print(f"  {line}")
        print("with its output kept:")
        for line in compiled_ops(openvino_compiled(blocked(model, best.output[0], Path(temp))), best.name):
            print(f"  {line}")


if __name__ == "__main__":
    main()
