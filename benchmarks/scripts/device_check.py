"""The prepared GPU check: every figure poet-edge wants from a machine with CUDA, in one run and one JSON.

Rows: PyTorch FP32 and FP16 (autocast) inference latency of POET-R50 at 512x512, batch 1 and 8, eager and
replayed as a CUDA graph; training images/s at batch 8 in float32 and with AMP through the real training loop;
the runtime's cuda-python buffers, stream and graph (a round trip checked bit for bit, with its copy
bandwidth); the TensorRT backend on an engine built from the model's export (a graph per batch size against
padding every batch to the largest, a forced capture failure followed by plain runs, and one estimator shared
by 8 threads); and ONNX Runtime on the CPU on the same model's ONNX export as a control. Without CUDA (or
TensorRT) every GPU row is reported as skipped with the reason, and the control still runs. Weights are random unless
``--checkpoint`` is given (latency does not depend on them). ``benchmarks/device_check.sh`` runs it from a bare
checkout.

Run: ``python benchmarks/scripts/device_check.py [--output device_check.json] [--backbone resnet18 --input-size 128]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poet.checkpoint import load_model, save_checkpoint
from poet.fileio import write_json
from poet.model import POET, PoetConfig, build_model
from poet.processing import PreprocessConfig

Row = dict[str, Any]


def skipped(name: str, reason: str, **settings: Any) -> Row:
    return {"name": name, **settings, "status": "skipped", "reason": reason}


def failed(name: str, error: BaseException, **settings: Any) -> Row:
    return {"name": name, **settings, "status": "failed", "reason": f"{type(error).__name__}: {error}"}


def percentiles(milliseconds: list[float]) -> dict[str, float]:
    values = np.asarray(milliseconds)
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}


def cuda_reason() -> str | None:
    """Why the GPU rows cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__}"
    return None


def time_cuda(step: Callable[[], Any], iters: int, warmup: int) -> list[float]:
    """Milliseconds per call of ``step`` between CUDA events, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def inference_row(model: POET, size: int, batch: int, fp16: bool, graph: bool, iters: int, warmup: int) -> Row:
    """Latency of one forward pass on the GPU, eager or replayed as a CUDA graph."""
    images = torch.randn(batch, 3, size, size, device="cuda")
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=fp16, cache_enabled=False)

    def forward() -> Any:
        with torch.inference_mode(), autocast:
            return model(images)

    step = forward
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                forward()
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            forward()
        step = cuda_graph.replay
    times = time_cuda(step, iters, warmup)
    p50 = float(np.percentile(times, 50))
    return {**percentiles(times), "images_per_s": round(batch * 1000.0 / p50, 1), "status": "ok"}


def inference_rows(model: POET, size: int, batches: Sequence[int], iters: int, warmup: int) -> list[Row]:
    rows = []
    reason = cuda_reason()
    if reason is None:
        model = model.cuda()
    for precision in ("fp32", "fp16"):
        for batch in batches:
            for graph in (False, True):
                settings = {"precision": precision, "batch": batch, "cuda_graph": graph, "input_size": size}
                name = "torch-inference"
                if reason is not None:
                    rows.append(skipped(name, reason, **settings))
                    continue
                try:
                    row = inference_row(model, size, batch, precision == "fp16", graph, iters, warmup)
                    rows.append({"name": name, **settings, **row})
                except Exception as error:  # a failing row is reported, and the others still run
                    rows.append(failed(name, error, **settings))
    if reason is None:
        model.cpu()
        torch.cuda.empty_cache()
    return rows


def training_rows(backbone: str, size: int, batch: int, steps: int) -> list[Row]:
    """Training images/s in float32 and with AMP (float16, grad scaler) through the real poet-train loop, in turns."""
    settings = {"backbone": backbone, "input_size": size, "batch": batch, "steps": steps}
    names = ("fp32", "amp")
    reason = cuda_reason()
    if reason is not None:
        return [skipped("torch-training", reason, setting=name, **settings) for name in names]
    from train_throughput import measure

    try:
        with tempfile.TemporaryDirectory() as work_dir:
            results = measure(names, 2, steps, size, batch, "cuda", backbone, Path(work_dir))
    except Exception as error:
        return [failed("torch-training", error, setting=name, **settings) for name in names]
    rows = []
    for name, result in results.items():
        shares = {f"share_{stage}": round(value, 3) for stage, value in result["shares"].items()}
        rows.append(
            {
                "name": "torch-training",
                "setting": name,
                **settings,
                "images_per_s": round(result["images_per_second"], 1),
                "autocast": result["precision"],
                "vs_fp32": round(result["ratio"], 2),
                "host_syncs_per_step": round(result["host_syncs_per_step"], 1),
                **shares,
                "status": "ok",
            }
        )
    return rows


def capture_failure_recovers(stream: Any, buffer: Any, pattern: np.ndarray) -> bool:
    """A capture broken on purpose (a stream synchronize inside it, which CUDA forbids) must return no graph
    and leave the stream usable: the plain round trip after it is checked bit for bit, as the TensorRT
    backend's fallback relies on."""
    nbytes = pattern.size

    def broken() -> bool:
        stream.copy_to_device(buffer, nbytes)
        stream._rt.cudaStreamSynchronize(stream._stream)  # invalidates the capture
        return True

    if stream.capture_graph(broken) is not None:
        return False
    buffer.host_view((nbytes,), np.dtype(np.uint8))[...] = pattern
    stream.copy_to_device(buffer, nbytes)
    buffer.host[:] = 0
    stream.copy_to_host(buffer, nbytes)
    stream.synchronize()
    return bool(np.array_equal(buffer.host_view((nbytes,), np.dtype(np.uint8)), pattern))


def runtime_cuda_row(nbytes: int = 8 * 512 * 512 * 3) -> Row:
    """The runtime's own CUDA layer: pinned buffers, copies both ways, a captured graph; checked and timed."""
    from poet.runtime.compat import TensorRTUnavailable
    from poet.runtime.cuda_memory import CudaError, device_info, open_stream

    settings = {"bytes": nbytes}
    try:
        device = device_info(0)
        stream = open_stream(0)
    except (CudaError, TensorRTUnavailable) as error:
        return skipped("runtime-cuda", str(error), **settings)
    try:
        buffer = stream.allocate(nbytes)
        pattern = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
        buffer.host_view((nbytes,), np.dtype(np.uint8))[...] = pattern
        started = time.perf_counter()
        stream.copy_to_device(buffer, nbytes)
        stream.synchronize()
        upload = time.perf_counter() - started
        buffer.host[:] = 0
        started = time.perf_counter()
        stream.copy_to_host(buffer, nbytes)
        stream.synchronize()
        download = time.perf_counter() - started
        round_trip = bool(np.array_equal(buffer.host_view((nbytes,), np.dtype(np.uint8)), pattern))
        graph_ok: bool | None = None
        fallback_ok: bool | None = None
        if stream.supports_graphs:

            def enqueue() -> bool:
                stream.copy_to_device(buffer, nbytes)
                stream.copy_to_host(buffer, nbytes)
                return True

            graph = stream.capture_graph(enqueue)
            if graph is not None:
                buffer.host_view((nbytes,), np.dtype(np.uint8))[...] = pattern[::-1]
                stream.launch_graph(graph)
                stream.synchronize()
                graph_ok = bool(np.array_equal(buffer.host_view((nbytes,), np.dtype(np.uint8)), pattern[::-1]))
                stream.destroy_graph(graph)
            else:
                graph_ok = False
            fallback_ok = capture_failure_recovers(stream, buffer, pattern)
    except Exception as error:
        return failed("runtime-cuda", error, **settings)
    finally:
        stream.close()
    return {
        "name": "runtime-cuda",
        **settings,
        "device": device.name,
        "compute_capability": device.compute_capability,
        "bindings": type(stream).__name__,
        "round_trip_equal": round_trip,
        "graph_replay_equal": graph_ok,
        "failed_capture_then_plain_copy_equal": fallback_ok,
        "upload_gb_per_s": round(nbytes / upload / 1e9, 2),
        "download_gb_per_s": round(nbytes / download / 1e9, 2),
        "status": "ok" if round_trip and graph_ok is not False and fallback_ok is not False else "failed",
    }


TENSORRT_MAX_BATCH = 4
# A batch pattern that needs every batch size and a smaller last chunk, as a video's streams ending give.
BATCH_PATTERN = (4, 4, 1, 3, 2, 4, 1)


def tensorrt_reason() -> str | None:
    """Why the TensorRT rows cannot run here, or None when they can."""
    reason = cuda_reason()
    if reason is not None:
        return reason
    from poet.runtime.compat import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return None


def pattern_inputs(size: int, pad_to: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Float inputs in :data:`BATCH_PATTERN`'s batch sizes, or each padded (unmasked black images) to ``pad_to``."""
    rng = np.random.default_rng(0)
    batches = []
    for count in BATCH_PATTERN:
        images = rng.normal(size=(count, 3, size, size)).astype(np.float32)
        mask = np.zeros((count, size, size), bool)
        if pad_to is not None:
            images = np.concatenate([images, np.zeros((pad_to - count, 3, size, size), np.float32)])
            mask = np.concatenate([mask, np.zeros((pad_to - count, size, size), bool)])
        batches.append((images, mask))
    return batches


def run_pattern(backend: Any, batches: list[tuple[np.ndarray, np.ndarray]], repeats: int) -> tuple[float, list]:
    """Milliseconds per image over ``repeats`` passes of the pattern (after one untimed pass), and the outputs."""
    outputs = [backend.infer(images, mask) for images, mask in batches]
    started = time.perf_counter()
    for _ in range(repeats):
        for images, mask in batches:
            backend.infer(images, mask)
    images_run = repeats * sum(BATCH_PATTERN)
    return 1000.0 * (time.perf_counter() - started) / images_run, outputs


def outputs_close(first: list, second: list, counts: Sequence[int]) -> bool:
    return all(
        np.allclose(a[name][:count], b[name][:count], rtol=1e-3, atol=1e-4)
        for a, b, count in zip(first, second, counts, strict=True)
        for name in a
    )


def broken_capture(backend: Any) -> None:
    """Make every capture of ``backend`` fail as CUDA would (a stream synchronize inside it)."""
    stream = backend._cuda
    capture = stream.capture_graph

    def capture_with_sync(enqueue: Callable[[], bool]) -> Any:
        def broken() -> bool:
            queued = enqueue()
            stream._rt.cudaStreamSynchronize(stream._stream)  # invalidates the capture
            return queued

        return capture(broken)

    stream.capture_graph = capture_with_sync


def tensorrt_rows(checkpoint: Path, size: int, repeats: int) -> list[Row]:
    """The TensorRT backend on an FP32 engine of the model: what the CPU stand-ins cannot show."""
    names = ("tensorrt-graphs", "tensorrt-capture-fallback", "tensorrt-threads")
    settings = {"input_size": size, "max_batch": TENSORRT_MAX_BATCH, "pattern": list(BATCH_PATTERN)}
    reason = tensorrt_reason()
    if reason is not None:
        return [skipped(name, reason, **settings) for name in names]
    from poet.optimize.engine import build_engine
    from poet.optimize.export import export_onnx
    from poet.runtime.tensorrt_backend import TensorRTBackend

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        try:
            exported = export_onnx(
                checkpoint, Path(folder) / "model.onnx", batch=None, max_batch=TENSORRT_MAX_BATCH, progress=False
            )
            engine = build_engine(exported.path, Path(folder) / "model.engine", progress=False).engine_path
        except Exception as error:
            return [failed(name, error, **settings) for name in names]
        try:  # a graph per batch size seen against padding every batch to the largest, one graph
            timings: dict[str, float] = {}
            with TensorRTBackend(engine) as plain:
                timings["plain_ms_per_image"], reference = run_pattern(plain, pattern_inputs(size), repeats)
            with TensorRTBackend(engine, cuda_graph=True) as per_batch:
                timings["graph_per_batch_ms_per_image"], graphed = run_pattern(per_batch, pattern_inputs(size), repeats)
                graphs = per_batch.graphs
            with TensorRTBackend(engine, cuda_graph=True) as padded:
                batches = pattern_inputs(size, pad_to=TENSORRT_MAX_BATCH)
                timings["padded_graph_ms_per_image"], padded_out = run_pattern(padded, batches, repeats)
            equal = outputs_close(reference, graphed, BATCH_PATTERN) and outputs_close(
                reference, padded_out, BATCH_PATTERN
            )
            rounded = {key: round(value, 3) for key, value in timings.items()}
            status = "ok" if equal and graphs == len(set(BATCH_PATTERN)) else "failed"
            rows.append(
                {"name": names[0], **settings, **rounded, "graphs": graphs, "outputs_equal": equal, "status": status}
            )
        except Exception as error:
            rows.append(failed(names[0], error, **settings))
        try:  # a forced capture failure, then plain runs that still give the plain outputs
            with TensorRTBackend(engine, cuda_graph=True) as backend:
                broken_capture(backend)
                _, fallback = run_pattern(backend, pattern_inputs(size), 1)
                fell_back = not backend.cuda_graph and backend.graphs == 0
            equal = outputs_close(reference, fallback, BATCH_PATTERN)
            status = "ok" if equal and fell_back else "failed"
            rows.append(
                {"name": names[1], **settings, "fell_back": fell_back, "outputs_equal": equal, "status": status}
            )
        except Exception as error:
            rows.append(failed(names[1], error, **settings))
        rows.append(threads_row(engine, size, names[2], settings))
    return rows


def threads_row(engine: Path, size: int, name: str, settings: Row) -> Row:
    """One estimator shared by 8 threads, 3 frames each: every thread's poses equal the single-threaded ones."""
    import threading

    from poet.runtime import PoseEstimator

    frames = [np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8) for seed in range(8)]
    try:
        estimator = PoseEstimator(engine, cuda_graph=True)
        alone = [estimator.predict_arrays([frame]) for frame in frames]
        results: dict[int, bool] = {}
        errors: list[str] = []

        def work(index: int) -> None:
            try:
                results[index] = all(estimator.predict_arrays([frames[index]]) == alone[index] for _ in range(3))
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

        threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        equal = not errors and all(results.values()) and len(results) == 8
        estimator.backend.close()
    except Exception as error:
        return failed(name, error, **settings)
    return {
        "name": name,
        **settings,
        "threads": 8,
        "errors": errors[:1],
        "poses_equal": equal,
        "status": "ok" if equal else "failed",
    }


def onnxruntime_row(checkpoint: Path, size: int, iters: int, warmup: int) -> Row:
    """ONNX Runtime on the CPU on the model's FP32 export, against PyTorch on the CPU: latency and agreement."""
    settings = {"precision": "fp32", "batch": 1, "input_size": size, "provider": "CPUExecutionProvider"}
    try:
        from poet.optimize.export import export_onnx
        from poet.runtime import PoseEstimator
    except ImportError as error:
        return skipped("onnxruntime-cpu", f"cannot export here: {error}", **settings)
    try:
        with tempfile.TemporaryDirectory() as folder:
            exported = export_onnx(checkpoint, Path(folder) / "model.onnx", progress=False)
            estimator = PoseEstimator(exported.path)
            image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
            inputs, _ = estimator.prepare([image])
            for _ in range(warmup):
                estimator.backend.infer(*inputs)
            times = []
            for _ in range(iters):
                started = time.perf_counter()
                estimator.backend.infer(*inputs)
                times.append(1000.0 * (time.perf_counter() - started))
    except Exception as error:
        return failed("onnxruntime-cpu", error, **settings)
    return {"name": "onnxruntime-cpu", **settings, **percentiles(times), "exported": True, "status": "ok"}


def environment() -> dict[str, Any]:
    import onnxruntime

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "onnxruntime": onnxruntime.__version__,
        "gpu": gpu,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def describe(row: Row) -> str:
    keys = [k for k in row if k not in ("name", "status", "reason")]
    settings = ", ".join(f"{k}={row[k]}" for k in keys)
    if row["status"] != "ok":
        return f"{row['name']:<16} {row['status'].upper()}: {row['reason']} ({settings})"
    return f"{row['name']:<16} {settings}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("device_check.json"), help="JSON of every row")
    parser.add_argument("--checkpoint", type=Path, help="POET checkpoint to time (default: random POET-R50)")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the random model (default: resnet50)")
    parser.add_argument("--input-size", type=int, default=512, help="square input size (default: 512)")
    parser.add_argument("--batches", default="1,8", help="inference batch sizes (default: 1,8)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch, float32 and AMP (default: 8)")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training steps (default: 10)")
    parser.add_argument("--iters", type=int, default=50, help="timed GPU forward passes per row (default: 50)")
    parser.add_argument("--cpu-iters", type=int, default=10, help="timed ONNX Runtime CPU runs (default: 10)")
    parser.add_argument(
        "--tensorrt-repeats", type=int, default=20, help="timed passes of the TensorRT batch pattern (default: 20)"
    )
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            config = PoetConfig(backbone=args.backbone, num_queries=25)
            checkpoint = Path(folder) / "poet.pth"
            save_checkpoint(checkpoint, build_model(config, PreprocessConfig(input_size=(args.input_size,) * 2)))
        model = load_model(checkpoint)
        rows = inference_rows(model, args.input_size, batches, args.iters, warmup=10)
        rows.extend(training_rows(args.backbone, args.input_size, args.train_batch, args.train_steps))
        rows.append(runtime_cuda_row())
        rows.extend(tensorrt_rows(checkpoint, args.input_size, args.tensorrt_repeats))
        rows.append(onnxruntime_row(checkpoint, args.input_size, args.cpu_iters, warmup=2))
    seconds = round(time.perf_counter() - started, 1)
    where = environment()
    write_json(args.output, {"environment": where, "seconds": seconds, "rows": rows}, indent=1)
    print(f"device check on {where['gpu'] or 'no GPU'} in {seconds} s:")
    for row in rows:
        print("  " + describe(row))
    print(f"written to {args.output}")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
