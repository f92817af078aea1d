"""The TensorRT graph check on every variant of a model: fp32, fp16, int8-tensorrt (FP16 and FP32 as its float
type) and int8-cpu; float and uint8 input; fixed and dynamic batch. Prints one row per graph.

    python benchmarks/scripts/tensorrt_graphs.py --calib-images DIR [--checkpoint model.pth] [--work DIR]

Without ``--checkpoint`` the model is POET-R50 at 512x512 with random weights (the graph does not depend on
the weights). INT8 is calibrated on a few images from ``--calib-images``; the check needs no TensorRT.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from poet.modelinfo import load_onnx
from poet.optimize.tensorrt_check import check_graph, default_opset, summary, tables

INPUTS = ("float", "uint8")
BATCHES = ("fixed", "dynamic")
VARIANTS = (("fp32", None, None), ("fp16", None, None), ("int8", "tensorrt", "fp16"), ("int8", "tensorrt", "fp32"))
CPU_VARIANT = ("int8", "cpu", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="POET checkpoint (default: POET-R50 512x512, random)")
    parser.add_argument("--calib-images", type=Path, required=True, help="images to calibrate INT8 on")
    parser.add_argument("--calib-count", type=int, default=8, help="calibration images (default: 8)")
    parser.add_argument("--work", type=Path, default=Path("build/tensorrt-graphs"), help="folder for the ONNX files")
    args = parser.parse_args()

    import torch

    from poet.model import PoetConfig, build_model
    from poet.optimize.export import export_onnx
    from poet.optimize.precision import make_variant
    from poet.processing import PreprocessConfig

    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    source = args.checkpoint or build_model(PoetConfig(), PreprocessConfig(input_size=(512, 512))).eval()
    stem = args.checkpoint.stem if args.checkpoint else "poet-r50-512"
    print(f"model: {args.checkpoint or 'POET-R50 512x512 (random weights)'}; TensorRT tables: {', '.join(tables())}")
    print("| input | batch | variant | nodes | opset | check | seconds |")
    print("|---|---|---|---|---|---|---|")
    for input_kind in INPUTS:
        for batch_kind in BATCHES:
            started = time.perf_counter()
            fp32 = args.work / f"{stem}-{input_kind}-{batch_kind}.onnx"
            export_onnx(
                source,
                fp32,
                batch=1 if batch_kind == "fixed" else None,
                max_batch=1 if batch_kind == "fixed" else 4,
                uint8_input=input_kind == "uint8",
                progress=False,
            )
            rows = [("fp32", fp32, time.perf_counter() - started)]
            for precision, target, float_type in (*VARIANTS[1:], CPU_VARIANT):
                started = time.perf_counter()
                name = precision + (f"-{target}" if target else "") + (f"-{float_type}" if float_type else "")
                path = fp32.with_name(f"{fp32.stem}.{name}.onnx")
                make_variant(
                    fp32,
                    path,
                    precision,
                    target=target or "tensorrt",
                    calibration=args.calib_images,
                    num_calib=args.calib_count,
                    int8_float=float_type or "fp16",
                    progress=False,
                )
                rows.append((name, path, time.perf_counter() - started))
            for name, path, seconds in rows:
                model, _ = load_onnx(path)
                violations = check_graph(model)
                opset = default_opset(model)
                verdict = "pass" if not violations else summary(violations, path.name)
                print(
                    f"| {input_kind} | {batch_kind} | {name} | {len(model.graph.node)} | {opset} | {verdict} | "
                    f"{seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
