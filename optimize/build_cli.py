"""``poet-build-engine``: checkpoint or ONNX -> precision ONNX -> strongly typed TensorRT engine + sidecar.

The precision ONNX (FP16 casts or calibrated INT8 Q/DQ) is written beside the engine first, so a
workstation without TensorRT still does the slow, portable part; it then says the one command that
builds the engine on the target device from that ONNX.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from poet import console
from poet.errors import PoetError
from poet.fileio import check_not_input, check_writable
from poet.modelinfo import PRECISIONS, read_onnx_info
from poet.runtime.compat import TensorRTUnavailable, build_command, require_tensorrt, sidecar_path

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="poet-build-engine",
        description="Build a TensorRT engine (with its JSON sidecar) from a POET checkpoint or poet-edge ONNX.",
    )
    parser.add_argument("model", type=Path, help="POET checkpoint (.pth) or poet-edge ONNX (from poet-export)")
    console.add_output(parser, "engine file to write, e.g. model.engine")
    precision = parser.add_mutually_exclusive_group(required=True)
    for name in PRECISIONS:
        precision.add_argument(f"--{name}", dest="precision", action="store_const", const=name, help=f"{name} engine")
    console.add_precision_options(parser, "INT8 calibration (when MODEL is not yet an INT8 ONNX)")
    console.add_batch(parser, dynamic=True)
    console.add_input_size(parser)
    parser.add_argument("--workspace", type=float, metavar="GIB", help="builder workspace limit in GiB")
    parser.add_argument("--timing-cache", type=Path, help="timing cache file, read if present and updated")
    parser.add_argument("--dla-core", type=int, help="Jetson DLA core to run on (GPU fallback for the rest)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device (default: 0)")
    console.add_progress(parser)
    return parser.parse_args(argv)


def precision_onnx(args: argparse.Namespace) -> Path:
    """The ONNX to build from: MODEL itself when it already has the precision, else a variant beside the engine."""
    if args.model.suffix.lower() == ".onnx":
        info = read_onnx_info(args.model)
        if info.precision == args.precision:
            if info.precision == "int8" and info.target != "tensorrt":
                raise PoetError(f"{args.model} is INT8 for {info.target}; TensorRT needs an INT8 ONNX for tensorrt")
            return args.model
        if info.precision != "fp32":
            raise PoetError(
                f"{args.model} is a {info.precision} model; give the FP32 ONNX or the checkpoint "
                f"for a {args.precision} engine"
            )
    from poet.optimize.precision import prepare_onnx

    variant = prepare_onnx(
        args.model,
        args.output.parent,
        args.precision,
        target="tensorrt",
        calib_images=args.calib_images,
        calib_annotations=args.calib_annotations,
        num_calib=args.calib_count,
        calib_method=args.calib_method,
        exclude=args.exclude,
        int8_float=args.int8_float,
        input_size=console.input_size(args),
        batch=None if args.max_batch else (args.batch or 1),
        max_batch=args.max_batch or args.batch or 1,
        progress=not args.no_progress,
    )
    log.info("precision ONNX written to %s", variant.path)
    return variant.path


def target_command(onnx: Path, args: argparse.Namespace) -> str:
    """The command that builds this engine on a machine with TensorRT, from the ONNX made here."""
    command = build_command(onnx, args.precision, args.output, args.max_batch)
    if args.dla_core is not None:
        command += f" --dla-core {args.dla_core}"
    if args.workspace is not None:
        command += f" --workspace {args.workspace:g}"
    return command


def tensorrt_here() -> str | None:
    """The TensorRT version installed here, None where there is none; a too-old one is refused in one line now,
    before the export and calibration that would otherwise run first."""
    try:
        require_tensorrt()
    except TensorRTUnavailable:
        return None
    import tensorrt as trt

    return str(trt.__version__)


@console.run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for output in (args.output, sidecar_path(args.output)):  # before any export, calibration or build
        check_writable(output)
        check_not_input(output, args.model, args.timing_cache)
    version = tensorrt_here()
    from poet.optimize.engine import check_dla_options
    from poet.optimize.tensorrt_check import check_onnx_file

    dynamic = args.max_batch
    if args.model.suffix.lower() == ".onnx":
        info = read_onnx_info(args.model)
        if info.batch is not None and args.max_batch:
            raise PoetError(
                f"{args.model} has a fixed batch of {info.batch}; --max-batch needs an ONNX exported with a dynamic "
                "batch (poet-export --max-batch N)"
            )
        dynamic = info.max_batch if info.batch is None else None
    check_dla_options(args.dla_core, dynamic, version)
    if args.precision == "int8" and args.calib_images is not None:
        from poet.optimize.precision import CalibrationSet, calibration_paths

        calibration_paths(CalibrationSet(args.calib_images, args.calib_annotations), args.calib_count)
    onnx = precision_onnx(args)
    if version is None:  # with TensorRT, build_engine runs the graph check itself
        check_onnx_file(onnx)
        raise PoetError(
            f"TensorRT is needed for the engine and is not installed here; {onnx} is ready and passes the TensorRT "
            f"graph check: on the target device run {target_command(onnx, args)}"
        )
    from poet.optimize.engine import build_engine

    fixed_batch = read_onnx_info(onnx).batch
    if args.batch is not None and fixed_batch != args.batch:
        raise PoetError(
            f"{onnx} has batch {fixed_batch or 'dynamic'}, not {args.batch}: export it with --batch {args.batch}"
        )
    result = build_engine(
        onnx,
        args.output,
        workspace_gib=args.workspace,
        timing_cache=args.timing_cache,
        dla_core=args.dla_core,
        max_batch=args.max_batch,
        device=args.device,
        progress=not args.no_progress,
    )
    counts = ", ".join(f"{count} {precision}" for precision, count in result.layer_precisions.items())
    print(f"wrote {result.engine_path} and {result.sidecar_path.name} ({result.build_seconds:.0f} s); layers: {counts}")
    if result.dla is not None:
        dla = result.dla
        print(
            f"DLA core {dla.core}: {dla.dla_layers} engine layers on DLA, {dla.gpu_layers} on the GPU "
            f"({dla.network_layers_dla_capable} of {dla.network_layers} network layers DLA-capable)"
        )
    return 0
