"""``poet-bench``: latency per stage beside OKS AP for every backend and precision of one checkpoint.

Each variant (PyTorch eager, ONNX Runtime FP32/FP16/INT8, TensorRT FP16/INT8, OpenVINO FP32/BF16/INT8) is
built once into ``--work-dir`` and reused while the checkpoint and settings are unchanged. All variants are
timed in turns (one batch of each per round) because CPU speed drifts over minutes on shared machines; each
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from poet.console import (
    DEFAULT_CALIBRATION_COUNT,
    add_batch,
    add_calibration,
    add_input_size,
    add_output,
    add_progress,
    input_size,
    positive_int,
    run_cli,
)
from poet.errors import CheckpointError, DatasetError, PoetError
from poet.evaluation import coco_results, evaluate_keypoints, listed_images, load_coco_keypoints, resolve_coco_paths
from poet.fileio import sha256_file, write_json
from poet.images import read_image
from poet.optimize.variants import VARIANT_NAMES, Variant, find_variant, variant
from poet.optimize.variants import table as variants_table
from poet.pipeline import STAGES, PosePipeline, StageTimes, timed_predict
from poet.processing import Pose

REPORT_STAGES = (*STAGES, "total")
PERCENTILES = (50, 90, 99)
STAMP_FILE = "bench-build.json"

logger = logging.getLogger("poet")


class BenchError(PoetError):
    """Benchmark settings that cannot be run (unknown variant, bad batch list)."""


class VariantUnavailable(Exception):
    """A variant this machine cannot build or run; its message is the reason shown in the report."""


@dataclass
class BenchSettings:
    """What ``poet-bench`` measures; :func:`run_benchmark` takes it so other tools (the quickstart) can call it."""

    checkpoint: Path
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
    calib_annotations: Path | None = None
    calib_count: int = DEFAULT_CALIBRATION_COUNT
    calib_method: str = "entropy"
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
        self.settings = settings
        self.work_dir = settings.work_dir
        self.fp32 = self.work_dir / "model.onnx"
        self.stamp_path = self.work_dir / STAMP_FILE
        self.stamps: dict[str, Any] = {}
        if self.stamp_path.is_file():
            with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
                stamps = json.loads(self.stamp_path.read_text())
                self.stamps = stamps if isinstance(stamps, dict) else {}
        self.checkpoint_key = sha256_file(settings.checkpoint)
        self.max_batch = max(settings.batches)

    def _key(self, *parts: object) -> str:
        return hashlib.sha256(json.dumps([self.checkpoint_key, *parts], default=str).encode()).hexdigest()

    def _reuse_or_build(self, path: Path, key: str, build: Callable[[], None]) -> Path:
        """Reuse ``path`` when it was built with these settings and still has the bytes it was built with."""
        stamp = self.stamps.get(path.name)
        if path.is_file() and isinstance(stamp, dict) and stamp.get("key") == key:
            if stamp.get("sha256") == sha256_file(path):
                return path
            logger.warning("%s changed since poet-bench built it: building it again", path)
        build()
        self.stamps[path.name] = {"key": key, "sha256": sha256_file(path)}
        write_json(self.stamp_path, self.stamps, indent=1)
        return path

    def build(self, row: Variant) -> Path:
        """Build (or reuse) the file of one variant; raises :class:`VariantUnavailable` with the reason."""
        if row.backend == "torch":
            if row.precision == "fp16":
                import torch

                if not torch.cuda.is_available():
                    raise VariantUnavailable("PyTorch FP16 runs only on CUDA and no GPU is available")
            return self.settings.checkpoint
        if row.backend == "tensorrt":
            return self.engine(row)
        if row.backend == "openvino" and importlib.util.find_spec("openvino") is None:
            raise VariantUnavailable('OpenVINO not installed (pip install "poet-edge[openvino]")')
        return self.onnx(row)

    def onnx(self, row: Variant) -> Path:
        """The uint8-input ONNX of ``row`` with a dynamic batch up to the largest benchmarked batch."""
        from poet.optimize.export import export_onnx
        from poet.optimize.precision import CalibrationSet, make_variant

        settings = self.settings
        fp32_key = self._key("onnx-fp32", settings.input_size, self.max_batch)
        self._reuse_or_build(
            self.fp32,
            fp32_key,
            lambda: export_onnx(
                settings.checkpoint,
                self.fp32,
                input_size=settings.input_size,
                batch=None,
                max_batch=self.max_batch,
                uint8_input=True,
                progress=settings.progress,
            ),
        )
        if row.precision == "fp32":
            return self.fp32
        calibration = None
        if row.precision == "int8":
            if settings.calib_images is None:
                raise VariantUnavailable("INT8 needs calibration images: give --calib-images DIR")
            calibration = CalibrationSet(settings.calib_images, settings.calib_annotations)
        if row.precision == "fp16" and importlib.util.find_spec("modelopt") is None:
            raise VariantUnavailable('FP16 ONNX needs ModelOpt: pip install "poet-edge[optimize]"')
        path = row.path(self.fp32)
        calib = [settings.calib_images, settings.calib_annotations, settings.calib_count, settings.calib_method]
        key = self._key(path.name, fp32_key, *(calib if calibration else []))
        return self._reuse_or_build(
            path,
            key,
            lambda: make_variant(
                self.fp32,
                path,
                row.precision,
                target=row.int8_target or "tensorrt",
                calibration=calibration,
                num_calib=settings.calib_count,
                calib_method=settings.calib_method,
                progress=settings.progress,
            ),
        )

    def engine(self, row: Variant) -> Path:
        """A TensorRT engine from the ONNX of the same precision (INT8 in TensorRT's Q/DQ layout)."""
        from poet.runtime.compat import TensorRTUnavailable, TensorRTVersionError, require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailable:
            raise VariantUnavailable('TensorRT not installed (pip install "poet-edge[tensorrt]")') from None
        except TensorRTVersionError as error:
            raise VariantUnavailable(str(error)) from None
        from poet.optimize.engine import build_engine

        onnx_path = self.onnx(find_variant("onnxruntime", row.precision, row.int8_target))
        path = row.path(self.fp32)
        key = self._key(path.name, sha256_file(onnx_path))
        return self._reuse_or_build(
            path, key, lambda: build_engine(onnx_path, path, max_batch=self.max_batch, progress=self.settings.progress)
        )


def load_pipeline(row: Variant, path: Path, settings: BenchSettings) -> PosePipeline:
    """The variant's pose pipeline, deciding every query (threshold 0), as COCO evaluation wants."""
    if row.backend == "torch":
        import torch

        from poet.checkpoint import load_model
        from poet.predictor import Predictor

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(path, device, settings.input_size)
        return Predictor(
            model, device, score_threshold=0.0, batch_size=max(settings.batches), fp16=row.precision == "fp16"
        )
    from poet.runtime import PoseEstimator

    # ORT's idle threads must not spin: they would steal the cores from the variant timed next in turn (PyTorch
    # ran 10x slower beside spinning ORT threads on a 2-core machine).
    return PoseEstimator(
        path,
        row.backend,
        score_threshold=0.0,
        spinning=False,
        cuda_graph=settings.cuda_graph,
        precision=row.float_precision,
    )


# ---------------------------------------------------------------- measuring


def batch_of(images: Sequence[np.ndarray], index: int, size: int) -> list[np.ndarray]:
    """The ``index``-th batch of ``size`` images, cycling through the set so every image is used."""
    return [images[(index * size + offset) % len(images)] for offset in range(size)]


def summarise(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of seconds, in milliseconds."""
    ms = 1000 * np.asarray(samples, dtype=np.float64)
    summary = {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in PERCENTILES}
    summary["mean"] = round(float(ms.mean()), 3)
    return summary


def measure(
    pipelines: dict[str, PosePipeline], images: Sequence[np.ndarray], batches: Sequence[int], iters: int, progress: bool
) -> dict[tuple[str, int], list[StageTimes]]:
    """Stage times of every variant and batch size, one batch of each in turn per round."""
    combos = [(name, batch) for name in pipelines for batch in batches]
    samples: dict[tuple[str, int], list[StageTimes]] = {combo: [] for combo in combos}
    with tqdm(total=iters * len(combos), desc="timing (in turns)", unit="batch", disable=not progress) as bar:
        for index in range(iters):
            for name, batch in combos:
                samples[name, batch].append(timed_predict(pipelines[name], batch_of(images, index, batch))[1])
                bar.update()
    return samples


def evaluate(
    pipeline: PosePipeline, coco: Any, image_ids: Sequence[int], images: Sequence[np.ndarray], batch_size: int
) -> dict[str, float]:
    """OKS AP/AR of the variant's poses on the loaded images (every person query submitted)."""
    poses: list[list[Pose]] = []
    for start in range(0, len(images), batch_size):
        poses.extend(pipeline.predict_arrays(images[start : start + batch_size]))
    return evaluate_keypoints(coco, coco_results(zip(image_ids, poses, strict=True)), list(image_ids))


# ---------------------------------------------------------------- the benchmark


def check_settings(settings: BenchSettings) -> Any:
    """Fail on bad input before any work, so nothing is written; returns the loaded COCO annotations."""
    if not settings.variants:
        raise BenchError(f"no variants given; valid variants: {', '.join(VARIANT_NAMES)}")
    for name in settings.variants:
        variant(name)
    if not settings.batches or min(settings.batches) < 1:
        raise BenchError(f"batch sizes must be positive integers, got {settings.batches}")
    if settings.iters < 1 or settings.warmup < 0:
        raise BenchError(f"--iters must be at least 1 and --warmup at least 0, got {settings.iters}, {settings.warmup}")
    if not settings.checkpoint.is_file():
        raise CheckpointError(f"checkpoint {settings.checkpoint} not found")
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
    entries, paths = listed_images(coco, settings.annotations, settings.images, settings.limit)
    images = [read_image(path) for path in paths]

    # Imports torch, OpenCV and ONNX Runtime first, so their own memory is not charged to the first variant.
    measured_on = environment()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    builder = VariantBuilder(settings)
    records = {name: VariantRecord(name) for name in settings.variants}
    pipelines: dict[str, PosePipeline] = {}
    with tqdm(total=len(records), desc="building variants", unit="variant", disable=not settings.progress) as bar:
        for name, record in records.items():
            try:
                row = variant(name)
                path = builder.build(row)
                # Memory is measured around loading and warm-up only: building (export, calibration) is not deployment.
                release_free_memory()
                before, gpu_before = rss_mib(), gpu_used_mib()
                pipeline = load_pipeline(row, path, settings)
                for index in range(settings.warmup):
                    for batch in settings.batches:
                        timed_predict(pipeline, batch_of(images, index, batch))
            except (VariantUnavailable, PoetError) as error:
                record.status, record.reason = "skipped", str(error)
                tqdm.write(f"{name}: skipped ({error})")
            except Exception as error:  # one broken variant must not cost the figures of all the others
                logger.exception("%s: could not be built or run", name)
                record.status, record.reason = "failed", f"{type(error).__name__}: {error}"
            else:
                pipelines[name] = pipeline
                record.model_path = str(path)
                record.memory_mib["rss_added"] = round(rss_mib() - before, 1)
                gpu_after = gpu_used_mib()
                if gpu_before is not None and gpu_after is not None:
                    record.memory_mib["gpu_added"] = round(gpu_after - gpu_before, 1)
            bar.update()

    samples = measure(pipelines, images, settings.batches, settings.iters, settings.progress)
    image_ids = [entry["id"] for entry in entries]
    for name, pipeline in tqdm(
        pipelines.items(), desc="OKS AP per variant", unit="variant", disable=not settings.progress
    ):
        stats = evaluate(pipeline, coco, image_ids, images, max(settings.batches))
        records[name].accuracy = {key: round(value, 4) for key, value in stats.items()}
    for (name, batch), stage_times in samples.items():
        latency = {stage: summarise([getattr(times, stage) for times in stage_times]) for stage in REPORT_STAGES}
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
        "model": str(settings.checkpoint),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-bench",
        description="Latency per stage (p50/p90/p99), throughput, memory and OKS AP of a POET checkpoint in "
        "every backend and precision; writes bench.json, bench.md and bench.png.",
        epilog=f"variants:\n{variants_table()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="POET checkpoint (.pth, ours or the authors')")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANT_NAMES),
        metavar="NAME",
        help=f"from: {', '.join(VARIANT_NAMES)} (default: all; those that cannot run here are skipped)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="COCO root (annotations/ and the split folder) or an annotation JSON"
    )
    parser.add_argument("--split", default="val2017", help="split under a COCO root (default: val2017)")
    parser.add_argument("--images", type=Path, help="image folder (needed when --data is an annotation file)")
    add_batch(parser, several=True)
    parser.add_argument(
        "--iters", type=positive_int, default=20, help="timed batches per variant and batch size (default: 20)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per variant and batch size (default: 3)")
    parser.add_argument("--limit", type=int, default=50, help="images for timing and OKS AP (default: 50, 0 = all)")
    add_input_size(parser)
    add_calibration(parser, "INT8 calibration (not the evaluation images)")
    parser.add_argument(
        "--work-dir", type=Path, help="built variants, reused while up to date (default: OUTPUT/variants)"
    )
    add_output(parser, "report folder", default=Path("bench"))
    parser.add_argument("--compare", type=Path, help="an earlier bench.json: mark regressions against it")
    parser.add_argument(
        "--max-slowdown", type=float, default=0.10, help="p50 latency increase flagged (default: 0.10 = 10%%)"
    )
    parser.add_argument("--max-ap-drop", type=float, default=0.01, help="AP decrease flagged (default: 0.01)")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit with code 1 when --compare flags any")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT variants replay CUDA graphs")
    add_progress(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The settings of the command line; options named as a settings field fill it as they are."""
    annotations, images = resolve_coco_paths(args.data, args.split, None, args.images)
    named = {item.name: getattr(args, item.name) for item in fields(BenchSettings) if hasattr(args, item.name)}
    named.update(
        annotations=annotations,
        images=images,
        work_dir=args.work_dir or args.output / "variants",
        variants=tuple(args.variants),
        batches=tuple(args.batch),
        limit=args.limit or None,
        input_size=input_size(args),
        progress=not args.no_progress,
    )
    return BenchSettings(**named)


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
