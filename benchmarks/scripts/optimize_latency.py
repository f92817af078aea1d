"""Batch-1 CPU latency of POET: PyTorch eager, ONNX FP32, INT8 for CPU and INT8 for TensorRT, in turns.

This machine's speed drifts 2-3x over minutes, so the variants are timed round-robin (a few runs of
each per round, many rounds) and compared as ratios of medians to ONNX FP32. Target: INT8 for CPU at
most 0.5x ONNX FP32. Give the ONNX files made by ``poet-export`` (same checkpoint, same input size).

    python benchmarks/scripts/optimize_latency.py --checkpoint /tmp/authors.pth --input-size 512 512 \\
        --onnx fp32=r50.onnx --onnx int8-cpu=r50.int8-cpu.onnx --onnx int8-tensorrt=r50.int8-tensorrt.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from poet.checkpoint import load_model
from poet.images import read_image
from poet.processing import preprocess


def _onnx_runner(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    def run() -> None:
        session.run(None, feeds)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="for the PyTorch eager baseline")
    parser.add_argument("--input-size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--onnx", action="append", required=True, metavar="NAME=PATH", help="fp32=... is the base")
    parser.add_argument("--image", type=Path, required=True, help="photograph to time")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-per-round", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    model = load_model(args.checkpoint, input_size=tuple(args.input_size))
    batch, mask, _ = preprocess([read_image(args.image)], model.preprocess)
    images_t, mask_t = torch.from_numpy(batch), torch.from_numpy(mask)

    def eager() -> None:
        with torch.inference_mode():
            model(images_t, mask_t)

    runners: dict[str, Callable[[], None]] = {"pytorch-eager": eager}
    for entry in args.onnx:
        name, path = entry.split("=", 1)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        runners[name] = _onnx_runner(session, {"images": batch, "mask": mask})
    if "fp32" not in runners:
        parser.error("one --onnx must be named fp32: the ratios are to it")

    for run in runners.values():
        for _ in range(args.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            for _ in range(args.runs_per_round):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["fp32"])
    print(
        f"\nbatch 1, {args.input_size[0]}x{args.input_size[1]}, {torch.get_num_threads()} torch threads, "
        f"{args.rounds} rounds x {args.runs_per_round} runs in turns, ONNX Runtime {ort.__version__} CPU"
    )
    print("| model | median ms | p10 ms | p90 ms | runs | ratio to ONNX FP32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in times.items():
        ms = np.array(samples) * 1000
        median = float(np.median(ms))
        print(
            f"| {name} | {median:.1f} | {np.percentile(ms, 10):.1f} | {np.percentile(ms, 90):.1f} | {len(ms)} "
            f"| {median / (base * 1000):.2f}x |"
        )


if __name__ == "__main__":
    main()
