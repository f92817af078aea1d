"""Build a strongly typed TensorRT engine from a poet-edge precision ONNX, with its JSON sidecar.

Precision lives in the ONNX (FP16 casts from mixed precision, INT8 Q/DQ from COCO calibration), so the
network is created ``STRONGLY_TYPED``: TensorRT 11 removed the FP16/INT8 builder flags and calibrators,
and TensorRT 10.3 (JetPack 6) honours the same flag. After the build the engine inspector counts the
layers per precision, so a build that silently ran everything in FP32 is reported loudly and recorded; a
DLA build counts the layers TensorRT placed on DLA the same way, since its fallback to the GPU is silent.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from poet.errors import PoetError
from poet.fileio import atomic_path, check_not_input, check_writable, sha256_file
from poet.modelinfo import ModelInfo, read_onnx_info
from poet.optimize.tensorrt_check import check_onnx_file
from poet.runtime.compat import (
    DLA_RELEASE_NAMES,
    EngineTarget,
    has_dla,
    host_platform,
    require_tensorrt,
    sidecar_path,
    write_sidecar,
)
from poet.runtime.cuda_memory import open_stream
from poet.runtime.tensorrt_backend import dims
from poet.runtime.tensorrt_log import MESSAGES, tensorrt_logger

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

Shape = tuple[int, ...]

# Words of the inspector's tensor type strings ("Row major linear FP16 format", "Half", "Int8", ...).
_PRECISION_WORDS = {
    "int8": {"Int8", "INT8"},
    "fp16": {"FP16", "Half"},
    "bf16": {"BF16", "BFloat16"},
    "fp8": {"FP8"},
    "fp32": {"FP32", "Float"},
}
# How TensorRT's builder log names each layer's device after a DLA build ("[DlaLayer] {ForeignNode[a...b]}",
# "[GpuLayer] SHUFFLE: /Flatten"), at INFO in 10.x's older releases and VERBOSE in newer ones.
DLA_LAYER, GPU_LAYER = "[DlaLayer]", "[GpuLayer]"


class EngineBuildError(PoetError):
    """An ONNX TensorRT cannot parse or build, or build options that do not fit the model or the device."""


@dataclass(frozen=True)
class DlaPlacement:
    """Where a DLA build put its layers: the engine's layers on DLA and on the GPU, and how many of the
    network's layers TensorRT judged DLA-capable before building."""

    core: int
    dla_layers: int
    gpu_layers: int
    network_layers_dla_capable: int
    network_layers: int

    def shortfall(self) -> str | None:
        """A warning when no layer, or only a minority of the network, runs on DLA."""
        if self.dla_layers == 0:
            return (
                f"NO layer runs on DLA core {self.core}: TensorRT placed all {self.gpu_layers} engine layers on the "
                f"GPU ({self.network_layers_dla_capable} of {self.network_layers} network layers were DLA-capable), "
                "so this is a GPU engine"
            )
        if 2 * self.network_layers_dla_capable < self.network_layers:
            return (
                f"only {self.network_layers_dla_capable} of {self.network_layers} network layers can run on DLA "
                f"core {self.core}: the engine has {self.dla_layers} layers on DLA and {self.gpu_layers} on the "
                "GPU, and every switch between them costs a copy"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "dla_layers": self.dla_layers,
            "gpu_layers": self.gpu_layers,
            "network_layers_dla_capable": self.network_layers_dla_capable,
            "network_layers": self.network_layers,
            "warning": self.shortfall(),
        }


@dataclass(frozen=True)
class EngineResult:
    """A written engine: its path, its sidecar's path and content, its layers counted per precision and, for
    a DLA build, where its layers run."""

    engine_path: Path
    sidecar_path: Path
    info: ModelInfo
    layer_precisions: dict[str, int]
    build_seconds: float
    dla: DlaPlacement | None = None


def batch_profile(
    info: ModelInfo, min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None
) -> tuple[int, int, int] | None:
    """(min, opt, max) batch of the optimisation profile, or None for an ONNX with a fixed batch.

    Defaults: 1 up to the ONNX's ``max_batch``, tuned for the largest batch (the throughput case).
    """
    requested = (min_batch, opt_batch, max_batch)
    if info.batch is not None:
        if any(value is not None for value in requested):
            raise EngineBuildError(
                f"the ONNX has a fixed batch of {info.batch}; export it with a dynamic batch (--max-batch N) "
                "to build an engine for a range of batch sizes"
            )
        return None
    high = max_batch or info.max_batch
    low = min_batch or 1
    opt = opt_batch or high
    if not 1 <= low <= opt <= high:
        raise EngineBuildError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {low}, {opt}, {high}")
    return low, opt, high


def profile_shapes(input_shapes: Mapping[str, Sequence[int]], batches: tuple[int, int, int]) -> dict[str, list[Shape]]:
    """Min/opt/max shape of every network input: its shape with the dynamic batch dimension filled in."""
    shapes = {}
    for name, shape in input_shapes.items():
        if shape[0] != -1 or any(dim < 0 for dim in shape[1:]):
            raise EngineBuildError(f"input {name!r} has shape {tuple(shape)}; expected a dynamic batch only (-1, ...)")
        shapes[name] = [(batch, *shape[1:]) for batch in batches]
    return shapes


def tensor_precision(tensor: Mapping[str, Any]) -> str:
    """Precision of one tensor of the inspector's JSON.

    TensorRT 10 writes one "Format/Datatype" string ("Row major linear FP16 format"), TensorRT 11 splits
    it into a format and a data type ("Half"): every type or format field is read.
    """
    text = " ".join(str(value) for key, value in tensor.items() if "type" in key.lower() or "format" in key.lower())
    words = set(re.split(r"[^A-Za-z0-9]+", text))
    return next((name for name, marks in _PRECISION_WORDS.items() if words & marks), "other")


def layer_precisions(engine_information: str) -> dict[str, int]:
    """Layers per precision in the engine inspector's JSON; a layer counts as its first input's type."""
    layers = json.loads(engine_information).get("Layers", [])
    counts: Counter[str] = Counter()
    for layer in layers:
        tensors = (layer.get("Inputs") or layer.get("Outputs") or [{}]) if isinstance(layer, dict) else [{}]
        counts[tensor_precision(tensors[0])] += 1
    return dict(sorted(counts.items()))


def layers_on_dla(engine_information: str, placement_log: Sequence[str]) -> tuple[int, int]:
    """(layers on DLA, layers on the GPU) of a built engine.

    TensorRT does not document how the inspector marks a DLA layer; its builder log does, one line per layer
    (``[DlaLayer] {ForeignNode[...]}``). An inspector layer counts as DLA where the log names it or its type
    says DLA; where the inspector names none of the logged layers, the log's count stands.
    """
    logged = {line.split(DLA_LAYER, 1)[1].strip().rstrip(",").strip() for line in placement_log if DLA_LAYER in line}
    layers = json.loads(engine_information).get("Layers", [])
    names = [str(layer.get("Name", "")) if isinstance(layer, dict) else str(layer) for layer in layers]
    kinds = [str(layer.get("LayerType", "")) if isinstance(layer, dict) else "" for layer in layers]
    on_dla = sum(1 for name, kind in zip(names, kinds, strict=True) if name in logged or "DLA" in kind.upper())
    if on_dla == 0 and logged:
        return len(logged), sum(1 for line in placement_log if GPU_LAYER in line)
    return on_dla, len(layers) - on_dla


def precision_shortfall(precision: str, counts: Mapping[str, int]) -> str | None:
    """A warning when a reduced-precision ONNX gave an engine without a single layer in that precision."""
    if precision == "fp32" or counts.get(precision, 0) > 0:
        return None
    if not set(counts) - {"other"}:
        return f"the engine inspector reported no layer types ({dict(counts)}), so the {precision} build is unverified"
    return (
        f"the {precision} ONNX built an engine with NO {precision} layers (layers per precision: {dict(counts)}): "
        f"TensorRT fell back to higher precision everywhere, so expect FP32 speed"
    )


def _parse_onnx(network: trt.INetworkDefinition, logger: trt.ILogger, onnx_path: Path) -> None:
    """Parse into ``network`` (external weight files beside the ONNX are found); report every parser error."""
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    mark = MESSAGES.mark()
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        errors.append(f"node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}")
    details = "\n  ".join(errors) or f"no parser details{MESSAGES.quote(mark)}"
    raise EngineBuildError(f"TensorRT cannot parse {onnx_path} ({len(errors)} errors):\n  {details}")


def _load_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> None:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s is from another TensorRT version or GPU: starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(config.get_timing_cache().serialize())


def check_dla_options(core: int | None, dynamic_max_batch: int | None, tensorrt_version: str | None) -> None:
    """Refuse, before building, a DLA build this TensorRT cannot make or that DLA cannot run.

    ``dynamic_max_batch`` is the largest batch of a dynamic-batch ONNX (None for a fixed batch);
    ``tensorrt_version`` None skips the release check (no TensorRT here).
    """
    if core is None:
        return
    if core < 0:
        raise EngineBuildError(f"--dla-core must be 0 or more, got {core}")
    if tensorrt_version is not None and not has_dla(tensorrt_version):
        raise EngineBuildError(f"TensorRT {tensorrt_version} has no DLA support: DLA runs with {DLA_RELEASE_NAMES}")
    if dynamic_max_batch is not None:
        raise EngineBuildError(
            f"DLA needs fixed shapes, and this ONNX has a dynamic batch (1..{dynamic_max_batch}); "
            "export it with --batch N"
        )


def _configure_dla(builder: trt.Builder, config: trt.IBuilderConfig, core: int, precision: str) -> None:
    """Run on the Jetson's deep learning accelerator, with layers DLA cannot run falling back to the GPU."""
    import tensorrt as trt

    cores = builder.num_DLA_cores
    if not 0 <= core < cores:
        raise EngineBuildError(
            f"DLA core {core} does not exist: this device has {cores} DLA cores "
            "(DLA is on Jetson AGX/NX Orin and Xavier)"
        )
    if precision == "fp32":
        log.warning("DLA runs only FP16 and INT8 layers: every layer of this fp32 model will fall back to the GPU")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _progress_monitor() -> trt.IProgressMonitor:
    """A TensorRT progress monitor drawing one tqdm bar per (nested) build phase."""
    import tensorrt as trt

    class TqdmProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._lock = threading.Lock()  # TensorRT may report from several threads

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = len(self._bars)
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return TqdmProgressMonitor()


@dataclass(frozen=True)
class _Built:
    """What the builder leaves: the serialized engine, its build log's layer placement lines, and how many of
    the network's layers are DLA-capable (None without DLA)."""

    serialized: trt.IHostMemory
    placement_log: list[str]
    dla_capable: tuple[int, int] | None


def _build(
    onnx_path: Path,
    info: ModelInfo,
    batches: tuple[int, int, int] | None,
    workspace_gib: float | None,
    cache_path: Path | None,
    dla_core: int | None,
    progress: bool,
) -> _Built:
    """Parse, configure and build on the current CUDA device. Builder, network and config are local, so they are
    freed when this returns, before the engine is deserialized again for inspection."""
    import tensorrt as trt

    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    _parse_onnx(network, logger, onnx_path)

    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's per-layer types need it
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if batches is not None:
        inputs = {network.get_input(i).name: dims(network.get_input(i).shape) for i in range(network.num_inputs)}
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes(inputs, batches).items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
        config.add_optimization_profile(profile)
    _load_timing_cache(config, cache_path)
    dla_capable = None
    if dla_core is not None:
        _configure_dla(builder, config, dla_core, info.precision)
        layers = [network.get_layer(index) for index in range(network.num_layers)]
        dla_capable = (sum(1 for layer in layers if config.can_run_on_DLA(layer)), len(layers))
    monitor = _progress_monitor() if progress else None  # referenced until the build ends, as TensorRT requires
    if monitor is not None:
        config.progress_monitor = monitor

    mark = MESSAGES.mark()
    with MESSAGES.watch(DLA_LAYER, GPU_LAYER) as placement_log:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path}{MESSAGES.quote(mark)}")
    if cache_path is not None:
        _save_timing_cache(config, cache_path)
    return _Built(serialized, placement_log, dla_capable)


def _inspect(serialized: trt.IHostMemory, onnx_path: Path, dla_core: int | None) -> str:
    """The engine inspector's JSON of a freshly built engine (deserialized once more, the builder gone)."""
    import tensorrt as trt

    runtime = trt.Runtime(tensorrt_logger())
    if dla_core is not None:
        runtime.DLA_core = dla_core  # before deserializing, or the engine lands on DLA core 0
    mark = MESSAGES.mark()
    engine = runtime.deserialize_cuda_engine(serialized)
    inspector = engine.create_engine_inspector() if engine is not None else None
    if inspector is None:
        raise EngineBuildError(
            f"TensorRT built an engine from {onnx_path} but could not load it back to count its layers"
            f"{MESSAGES.quote(mark)}"
        )
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    workspace_gib: float | None = None,
    timing_cache: str | Path | None = None,
    dla_core: int | None = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    device: int = 0,
    progress: bool = True,
) -> EngineResult:
    """Build ``engine_path`` and its sidecar ``<engine>.json`` from a poet-edge ONNX; both written atomically.

    The batch range comes from the ONNX's :class:`ModelInfo` unless ``min_batch``/``opt_batch``/``max_batch``
    narrow it. ``timing_cache`` is read if it exists and written back, so rebuilds skip kernel timing.
    ``dla_core`` puts the network on that Jetson DLA core with GPU fallback.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info = read_onnx_info(onnx_path)
    check_onnx_file(onnx_path)
    batches = batch_profile(info, min_batch, opt_batch, max_batch)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    check_writable(engine_path)
    check_not_input(engine_path, onnx_path, cache_path)
    check_not_input(sidecar_path(engine_path), onnx_path, cache_path)
    require_tensorrt()
    import tensorrt as trt

    check_dla_options(dla_core, batches[2] if batches else None, trt.__version__)

    start = time.perf_counter()
    cuda = open_stream(device)
    try:
        with cuda.current():  # TensorRT builds for the device current on this thread
            built = _build(onnx_path, info, batches, workspace_gib, cache_path, dla_core, progress)
            engine_information = _inspect(built.serialized, onnx_path, dla_core)
    finally:
        cuda.close()
    seconds = time.perf_counter() - start
    counts = layer_precisions(engine_information)
    shortfall = precision_shortfall(info.precision, counts)
    if shortfall:
        log.warning("%s: %s", engine_path, shortfall)
    placement = None
    if dla_core is not None and built.dla_capable is not None:
        placement = DlaPlacement(dla_core, *layers_on_dla(engine_information, built.placement_log), *built.dla_capable)
        dla_warning = placement.shortfall()
        if dla_warning:
            log.warning("%s: %s", engine_path, dla_warning)

    target = EngineTarget(trt.__version__, cuda.info.name, cuda.info.compute_capability, host_platform())
    batch_range = list(batches) if batches else None  # a list, as it reads back from the JSON sidecar
    options = {"workspace_gib": workspace_gib, "dla_core": dla_core, "batch_profile": batch_range, "device": device}
    engine_info = info.replace(
        max_batch=batches[2] if batches else info.max_batch,
        extra={
            **info.extra,
            "onnx": {"path": str(onnx_path), "sha256": sha256_file(onnx_path)},
            "tensorrt": {
                **target.to_dict(),
                "layer_precisions": counts,
                "precision_warning": shortfall,
                "build_options": options,
                "build_seconds": round(seconds, 1),
                **({"dla": placement.to_dict()} if placement else {}),
            },
        },
    )
    with atomic_path(engine_path) as engine_tmp:  # the engine appears only once its sidecar is written
        engine_tmp.write_bytes(built.serialized)
        write_sidecar(engine_path, engine_info)
    return EngineResult(engine_path, sidecar_path(engine_path), engine_info, counts, seconds, placement)
