"""``poet-bench``: latency per stage beside OKS AP for every backend and precision of one checkpoint.

Each variant (PyTorch eager, ONNX Runtime FP32/FP16/INT8, TensorRT FP16/INT8) is built once into
``--work-dir`` and reused while the checkpoint and settings are unchanged. All variants are timed in
turns (one batch of each per round) because CPU speed drifts over minutes on shared machines; each
turn times letterbox (pre-process), inference and decoding (post-process) separately. OKS AP/AR come
from the same images through the same runtime. Variants that cannot run here are reported as skipped
with the reason. The report (``bench.json``, ``bench.md``, ``bench.png``) appears complete or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from poet.cli import coco_paths
from poet.console import run_cli
from poet.errors import CheckpointError, DatasetError, PoetError
from poet.evaluation import coco_results, evaluate_keypoints, load_coco_keypoints
from poet.fileio import write_json
from poet.images import read_image
from poet.processing import Letterbox, Pose, decode_poses, preprocess

TORCH_VARIANTS = ("torch", "torch-fp16")
ONNX_VARIANTS = ("onnx-fp32", "onnx-fp16", "onnx-int8")
TRT_VARIANTS = ("trt-fp16", "trt-int8")
VARIANTS = (*TORCH_VARIANTS, *ONNX_VARIANTS, *TRT_VARIANTS)
STAGES = ("preprocess", "inference", "postprocess", "total")
PERCENTILES = (50, 90, 99)
STAMP_FILE = "bench-build.json"

logger = logging.getLogger("poet")


class BenchError(PoetError):
    """Benchmark settings that cannot be run (unknown variant, bad batch list)."""


class VariantUnavailable(Exception):
    """A variant this machine cannot build or run; its message is the reason shown in the report."""


class Runner(Protocol):
    """One variant split into the stages that are timed apart."""

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]: ...

    def infer(self, inputs: Any) -> Any: ...

    def decode(self, outputs: Any, letterboxes: Sequence[Letterbox]) -> list[list[Pose]]: ...

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]: ...


@dataclass
class BenchSettings:
    """What ``poet-bench`` measures; :func:`run_benchmark` takes it so other tools (the quickstart) can call it."""

    model: Path
    annotations: Path
    images: Path
    output: Path
    work_dir: Path
    variants: tuple[str, ...] = ("torch", "onnx-fp32")
    batches: tuple[int, ...] = (1,)
    iters: int = 20
    warmup: int = 3
    limit: int | None = 50
    input_size: tuple[int, int] | None = None
    calib_images: Path | None = None
    num_calib: int = 64
    compare: Path | None = None
    max_slowdown: float = 0.10
    max_ap_drop: float = 0.01
    cuda_graph: bool = False
    progress: bool = True


@dataclass
class VariantRecord:
    """A variant's outcome: its model file, memory, accuracy and per-batch latencies, or why it was skipped."""

    name: str
    status: str = "ok"
    reason: str | None = None
    model_path: str | None = None
    memory_mib: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- environment and memory


def rss_mib(field_name: str = "VmRSS") -> float:
    """Resident memory of this process (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc (Linux)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; peak only


def release_free_memory() -> None:
    """Hand memory freed by earlier work (export, calibration, other variants) back to the OS.

    Otherwise the allocator reuses it for the next variant and that variant's added RSS reads as zero.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)  # glibc only


def gpu_used_mib() -> float | None:
    """Memory in use on the current CUDA device (all processes, any allocator), or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


# ---------------------------------------------------------------- building variants


class VariantBuilder:
    """Builds model files into ``work_dir`` once; a file is reused while its recorded build key matches.

    The key hashes the checkpoint bytes and every setting that shapes the file (input size, batch range,
    precision, calibration), so a new checkpoint or setting rebuilds and an unchanged one never does.
    """

    def __init__(self, settings: BenchSettings) -> None:
        from poet.optimize.export import sha256_file

        self.settings = settings
        self.work_dir = settings.work_dir
        self.stamp_path = self.work_dir / STAMP_FILE
        self.stamps: dict[str, str] = {}
        if self.stamp_path.is_file():
            with contextlib.suppress(json.JSONDecodeError):
                self.stamps = json.loads(self.stamp_path.read_text())
        self.checkpoint_key = sha256_file(settings.model)
        self.max_batch = max(settings.batches)

    def _key(self, *parts: object) -> str:
        return hashlib.sha256(json.dumps([self.checkpoint_key, *parts], default=str).encode()).hexdigest()

    def _reuse_or_build(self, path: Path, key: str, build: Callable[[], None]) -> Path:
        if path.is_file() and self.stamps.get(path.name) == key:
            return path
        build()
        self.stamps[path.name] = key
        write_json(self.stamp_path, self.stamps, indent=1)
        return path

    def onnx(self, precision: str, target: str | None = None) -> Path:
        """The uint8-input ONNX of ``precision`` with a dynamic batch up to the largest benchmarked batch."""
        from poet.optimize.export import export_onnx
        from poet.optimize.precision import CalibrationSet, make_variant

        size = self.settings.input_size
        fp32_key = self._key("onnx-fp32", size, self.max_batch)
        fp32 = self._reuse_or_build(
            self.work_dir / "model.fp32.onnx",
            fp32_key,
            lambda: export_onnx(
                self.settings.model,
                self.work_dir / "model.fp32.onnx",
                input_size=size,
                batch=None,
                max_batch=self.max_batch,
                uint8_input=True,
                progress=self.settings.progress,
            ),
        )
        if precision == "fp32":
            return fp32
        calibration = None
        if precision == "int8":
            if self.settings.calib_images is None:
                raise VariantUnavailable("INT8 needs calibration images: give --calib-images DIR")
            calibration = CalibrationSet(self.settings.calib_images)
        name = f"model.{precision}" + (f"-{target}" if target else "") + ".onnx"
        path = self.work_dir / name
        calib = str(self.settings.calib_images) if calibration else None
        key = self._key(name, fp32_key, calib, self.settings.num_calib)
        if precision == "fp16" and importlib.util.find_spec("modelopt") is None:
            raise VariantUnavailable('FP16 ONNX needs ModelOpt: pip install "poet-edge[optimize]"')
        return self._reuse_or_build(
            path,
            key,
            lambda: make_variant(
                fp32,
                path,
                precision,
                target=target or "tensorrt",
                calibration=calibration,
                num_calib=self.settings.num_calib,
                progress=self.settings.progress,
            ),
        )

    def engine(self, precision: str) -> Path:
        """A TensorRT engine from the ``precision`` ONNX (INT8 in TensorRT's Q/DQ layout)."""
        from poet.runtime.compat import TensorRTUnavailable, require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailable:
            raise VariantUnavailable('TensorRT not installed (pip install "poet-edge[tensorrt]")') from None
        from poet.optimize.engine import build_engine
        from poet.optimize.export import sha256_file

        onnx_path = self.onnx(precision, "tensorrt" if precision == "int8" else None)
        path = onnx_path.with_suffix(".engine")
        key = self._key(path.name, sha256_file(onnx_path))
        return self._reuse_or_build(
            path, key, lambda: build_engine(onnx_path, path, max_batch=self.max_batch, progress=self.settings.progress)
        )


# ---------------------------------------------------------------- runners


class TorchRunner:
    """PyTorch eager, FP32 or FP16 autocast on CUDA: the shared letterbox, the model, the shared decoding."""

    def __init__(self, settings: BenchSettings, fp16: bool) -> None:
        import torch

        from poet.checkpoint import load_model
        from poet.predictor import Predictor

        if fp16 and not torch.cuda.is_available():
            raise VariantUnavailable("PyTorch FP16 runs only on CUDA and no GPU is available")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(settings.model, self.device, settings.input_size)
        self.fp16 = fp16
        self.predictor = Predictor(self.model, self.device, score_threshold=0.0)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        return torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        import torch

        batch, mask, letterboxes = preprocess(images, self.model.preprocess)
        return (torch.from_numpy(batch).to(self.device), torch.from_numpy(mask).to(self.device)), letterboxes

    def infer(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode(), self._autocast():
            outputs = self.model(*inputs)
        # Copying to the host waits for the GPU, so the time includes the whole forward pass.
        return outputs["pred_logits"].float().cpu().numpy(), outputs["pred_kpts"].float().cpu().numpy()

    def decode(self, outputs: tuple[np.ndarray, np.ndarray], letterboxes: Sequence[Letterbox]) -> list[list[Pose]]:
        logits, kpts = outputs
        return [decode_poses(logits[i], kpts[i], box.original_size, 0.0) for i, box in enumerate(letterboxes)]

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        with self._autocast():
            return self.predictor.predict_arrays(images)


class EstimatorRunner:
    """An ONNX model or TensorRT engine through the torch-free runtime, :class:`poet.runtime.PoseEstimator`."""

    def __init__(self, path: Path, cuda_graph: bool = False) -> None:
        from poet.runtime import PoseEstimator

        # Threshold 0: every query labelled person is decoded and scored, as COCO evaluation wants. ORT's idle
        # threads must not spin: they would steal the cores from the variant timed next in turn (PyTorch ran
        # 10x slower beside spinning ORT threads on a 2-core machine).
        self.estimator = PoseEstimator(path, score_threshold=0.0, spinning=False, cuda_graph=cuda_graph)

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        return self.estimator.prepare(images)

    def infer(self, inputs: Any) -> dict[str, np.ndarray]:
        return self.estimator.backend.infer(*inputs)

    def decode(self, outputs: dict[str, np.ndarray], letterboxes: Sequence[Letterbox]) -> list[list[Pose]]:
        return self.estimator.decode(outputs, letterboxes)

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        return self.estimator.predict_arrays(images)


def build_variant(name: str, builder: VariantBuilder) -> Path:
    """Build (or reuse) one variant's model file; raises :class:`VariantUnavailable` with the reason."""
    if name in TORCH_VARIANTS:
        return builder.settings.model
    precision = name.split("-", 1)[1]
    if name in TRT_VARIANTS:
        return builder.engine(precision)
    import onnxruntime as ort

    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    return builder.onnx(precision, ("tensorrt" if gpu else "cpu") if precision == "int8" else None)


def load_runner(name: str, path: Path, settings: BenchSettings) -> Runner:
    if name in TORCH_VARIANTS:
        return TorchRunner(settings, fp16=name == "torch-fp16")
    return EstimatorRunner(path, settings.cuda_graph)


# ---------------------------------------------------------------- measuring


def batch_of(images: Sequence[np.ndarray], index: int, size: int) -> list[np.ndarray]:
    """The ``index``-th batch of ``size`` images, cycling through the set so every image is used."""
    return [images[(index * size + offset) % len(images)] for offset in range(size)]


def time_stages(runner: Runner, images: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """Seconds of pre-process, inference and post-process for one batch."""
    start = time.perf_counter()
    inputs, letterboxes = runner.prepare(images)
    prepared = time.perf_counter()
    outputs = runner.infer(inputs)
    inferred = time.perf_counter()
    runner.decode(outputs, letterboxes)
    return prepared - start, inferred - prepared, time.perf_counter() - inferred


def summarise(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of seconds, in milliseconds."""
    ms = 1000 * np.asarray(samples, dtype=np.float64)
    summary = {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in PERCENTILES}
    summary["mean"] = round(float(ms.mean()), 3)
    return summary


def measure(
    runners: dict[str, Runner], images: Sequence[np.ndarray], batches: Sequence[int], iters: int, progress: bool
) -> dict[tuple[str, int], list[tuple[float, float, float]]]:
    """Stage times of every variant and batch size, one batch of each in turn per round."""
    combos = [(name, batch) for name in runners for batch in batches]
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {combo: [] for combo in combos}
    with tqdm(total=iters * len(combos), desc="timing (in turns)", unit="batch", disable=not progress) as bar:
        for index in range(iters):
            for name, batch in combos:
                samples[name, batch].append(time_stages(runners[name], batch_of(images, index, batch)))
                bar.update()
    return samples


def evaluate(
    runner: Runner, coco: Any, image_ids: Sequence[int], images: Sequence[np.ndarray], batch_size: int
) -> dict[str, float]:
    """OKS AP/AR of the variant's poses on the loaded images (every person query submitted)."""
    poses: list[list[Pose]] = []
    for start in range(0, len(images), batch_size):
        poses.extend(runner.predict_arrays(images[start : start + batch_size]))
    return evaluate_keypoints(coco, coco_results(zip(image_ids, poses, strict=True)), list(image_ids))


# ---------------------------------------------------------------- the benchmark


def check_settings(settings: BenchSettings) -> Any:
    """Fail on bad input before any work, so nothing is written; returns the loaded COCO annotations."""
    unknown = [name for name in settings.variants if name not in VARIANTS]
    if unknown:
        raise BenchError(f"unknown variant {', '.join(map(repr, unknown))}; valid variants: {', '.join(VARIANTS)}")
    if not settings.variants:
        raise BenchError(f"no variants given; valid variants: {', '.join(VARIANTS)}")
    if not settings.batches or min(settings.batches) < 1:
        raise BenchError(f"batch sizes must be positive integers, got {settings.batches}")
    if settings.iters < 1 or settings.warmup < 0:
        raise BenchError(f"--iters must be at least 1 and --warmup at least 0, got {settings.iters}, {settings.warmup}")
    if not settings.model.is_file():
        raise CheckpointError(f"checkpoint {settings.model} not found")
    if settings.compare is not None and not settings.compare.is_file():
        raise BenchError(f"--compare report {settings.compare} not found")
    coco = load_coco_keypoints(settings.annotations)
    if not coco.dataset["images"]:
        raise DatasetError(f"{settings.annotations} lists no images")
    return coco


def read_report(path: Path) -> dict[str, Any]:
    """An earlier ``bench.json`` for ``--compare``; a clear error for any other file."""
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BenchError(f"--compare {path} is not valid JSON: {error}") from None
    if not isinstance(report, dict) or not isinstance(report.get("variants"), list):
        raise BenchError(f"--compare {path} is not a poet-bench report (expected the bench.json of an earlier run)")
    return report


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Build, time and evaluate every variant, write the report into ``settings.output``; returns its JSON."""
    from poet.benchmarks.bench_report import compare_reports, environment, write_report

    coco = check_settings(settings)
    old = read_report(settings.compare) if settings.compare is not None else None
    entries = sorted(coco.dataset["images"], key=lambda item: item["id"])[: settings.limit]
    paths = [settings.images / entry["file_name"] for entry in entries]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images listed in {settings.annotations} are not in {settings.images}")
    images = [read_image(path) for path in paths]

    # Imports torch, OpenCV and ONNX Runtime first, so their own memory is not charged to the first variant.
    measured_on = environment()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    builder = VariantBuilder(settings)
    records = {name: VariantRecord(name) for name in settings.variants}
    runners: dict[str, Runner] = {}
    with tqdm(total=len(records), desc="building variants", unit="variant", disable=not settings.progress) as bar:
        for name, record in records.items():
            try:
                path = build_variant(name, builder)
                # Memory is measured around loading and warm-up only: building (export, calibration) is not deployment.
                release_free_memory()
                before, gpu_before = rss_mib(), gpu_used_mib()
                runner = load_runner(name, path, settings)
                for index in range(settings.warmup):
                    for batch in settings.batches:
                        time_stages(runner, batch_of(images, index, batch))
            except (VariantUnavailable, PoetError) as error:
                record.status, record.reason = "skipped", str(error)
                tqdm.write(f"{name}: skipped ({error})")
            except Exception as error:  # one broken variant must not cost the figures of all the others
                logger.exception("%s: could not be built or run", name)
                record.status, record.reason = "failed", f"{type(error).__name__}: {error}"
            else:
                runners[name] = runner
                record.model_path = str(path)
                record.memory_mib["rss_added"] = round(rss_mib() - before, 1)
                gpu_after = gpu_used_mib()
                if gpu_before is not None and gpu_after is not None:
                    record.memory_mib["gpu_added"] = round(gpu_after - gpu_before, 1)
            bar.update()

    samples = measure(runners, images, settings.batches, settings.iters, settings.progress)
    image_ids = [entry["id"] for entry in entries]
    for name, runner in tqdm(runners.items(), desc="OKS AP per variant", unit="variant", disable=not settings.progress):
        stats = evaluate(runner, coco, image_ids, images, max(settings.batches))
        records[name].accuracy = {key: round(value, 4) for key, value in stats.items()}
    for (name, batch), stage_times in samples.items():
        columns = list(zip(*stage_times, strict=True))
        totals = [sum(parts) for parts in stage_times]
        latency = {stage: summarise(values) for stage, values in zip(STAGES, [*columns, totals], strict=True)}
        records[name].batches.append(
            {
                "batch": batch,
                "iterations": len(stage_times),
                "latency_ms": latency,
                "throughput_ips": round(batch * 1000 / latency["total"]["p50"], 2),
            }
        )
    report: dict[str, Any] = {
        "schema": 1,
        "model": str(settings.model),
        "input_size": list(settings.input_size) if settings.input_size else None,
        "data": {"annotations": str(settings.annotations), "images": str(settings.images), "count": len(images)},
        "settings": {
            "variants": list(settings.variants),
            "batches": list(settings.batches),
            "iters": settings.iters,
            "warmup": settings.warmup,
            "cuda_graph": settings.cuda_graph,
            "timing": "variants and batch sizes in turns, one batch each per round",
        },
        "environment": measured_on,
        "variants": [asdict(record) for record in records.values()],
    }
    report["environment"]["peak_rss_mib"] = round(rss_mib("VmHWM"), 1)
    if old is not None:
        report["compare"] = {
            "baseline": str(settings.compare),
            "same_data": old.get("data") == report["data"],
            "max_slowdown": settings.max_slowdown,
            "max_ap_drop": settings.max_ap_drop,
            "regressions": compare_reports(old, report, settings.max_slowdown, settings.max_ap_drop),
        }
    write_report(report, settings.output)
    return report


def parse_list(text: str, kind: type) -> tuple[Any, ...]:
    try:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    except ValueError:
        raise BenchError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-bench",
        description="Latency per stage (p50/p90/p99), throughput, memory and OKS AP of a POET checkpoint in "
        "every backend and precision; writes bench.json, bench.md and bench.png.",
    )
    parser.add_argument("--model", type=Path, required=True, help="POET checkpoint (.pth, ours or the authors')")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all; those that cannot run here are skipped)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="COCO root (annotations/ and the split folder) or an annotation JSON"
    )
    parser.add_argument("--split", default="val2017", help="split under a COCO root (default: val2017)")
    parser.add_argument("--images", type=Path, help="image folder (needed when --data is an annotation file)")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (default: 1)")
    parser.add_argument("--iters", type=int, default=20, help="timed batches per variant and batch size (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per variant and batch size (default: 3)")
    parser.add_argument("--limit", type=int, default=50, help="images for timing and OKS AP (default: 50, 0 = all)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="letterbox size (default: model's)")
    parser.add_argument("--calib-images", type=Path, help="INT8 calibration images (not the evaluation images)")
    parser.add_argument("--num-calib", type=int, default=64, help="INT8 calibration images used (default: 64)")
    parser.add_argument(
        "--work-dir", type=Path, help="built variants, reused while up to date (default: OUTPUT/variants)"
    )
    parser.add_argument("--output", type=Path, default=Path("bench"), help="report folder (default: bench/)")
    parser.add_argument("--compare", type=Path, help="an earlier bench.json: mark regressions against it")
    parser.add_argument(
        "--max-slowdown", type=float, default=0.10, help="p50 latency increase flagged (default: 0.10 = 10%%)"
    )
    parser.add_argument("--max-ap-drop", type=float, default=0.01, help="AP decrease flagged (default: 0.01)")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit with code 1 when --compare flags any")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT variants replay CUDA graphs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    data: Path = args.data
    if data.is_file():
        if args.images is None:
            raise DatasetError(f"--data {data} is an annotation file: give its image folder with --images")
        annotations, images = data, args.images
    elif data.is_dir():
        annotations, images = coco_paths(data, args.split, None, args.images)
    else:
        raise DatasetError(f"--data {data} not found (expected a COCO root folder or an annotation JSON)")
    return BenchSettings(
        model=args.model,
        annotations=annotations,
        images=images,
        output=args.output,
        work_dir=args.work_dir or args.output / "variants",
        variants=parse_list(args.variants, str),
        batches=parse_list(args.batch, int),
        iters=args.iters,
        warmup=args.warmup,
        limit=args.limit or None,
        input_size=tuple(args.input_size) if args.input_size else None,
        calib_images=args.calib_images,
        num_calib=args.num_calib,
        compare=args.compare,
        max_slowdown=args.max_slowdown,
        max_ap_drop=args.max_ap_drop,
        cuda_graph=args.cuda_graph,
        progress=not args.no_progress,
    )


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from poet.benchmarks.bench_report import markdown_table

    report = run_benchmark(settings_from_args(args))
    print(markdown_table(report))
    regressions = report.get("compare", {}).get("regressions", [])
    for regression in regressions:
        print(f"regression: {regression['message']}")
    print(f"report written to {args.output}/bench.json, bench.md, bench.png")
    return 1 if regressions and args.fail_on_regression else 0


if __name__ == "__main__":
    raise SystemExit(main(None))
