"""Whether a TensorRT engine can run here: its JSON sidecar, the running TensorRT and GPU, and a clear refusal.

A serialized engine only runs under the TensorRT version that built it and on GPUs of the compute
capability it was built for; otherwise TensorRT fails with an obscure deserialization error or, worse,
runs slowly. ``poet-build-engine`` records both in ``<engine>.json`` and the runtime compares them
before deserializing. Torch- and onnx-free, so the runtime and ``poet.optimize.engine`` share it.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poet.errors import ModelError, PoetError
from poet.fileio import write_json
from poet.modelinfo import ModelInfo

log = logging.getLogger(__name__)

TENSORRT_INSTALL = (
    'on an x86 machine with an NVIDIA GPU run: pip install "poet-edge[tensorrt]"; on a Jetson use JetPack\'s '
    "TensorRT (sudo apt install python3-libnvinfer) from a venv made with python3 -m venv --system-site-packages"
)


# Strongly typed networks, IProgressMonitor and the name-based I/O API all arrived in TensorRT 10.
MIN_TENSORRT = (10, 0)
# DLA was unavailable from TensorRT 11.0 through 11.3 (11.4 brought it back).
NO_DLA_RELEASES = ((11, 0), (11, 4))


class TensorRTUnavailable(PoetError):
    """TensorRT (or the CUDA bindings it needs) is not installed here."""


class TensorRTVersionError(PoetError):
    """A TensorRT older than poet-edge needs, or one whose version cannot be read."""


def tensorrt_release(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``; a version that does not start with two numbers is refused in one line."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise TensorRTVersionError(f"cannot read the TensorRT version {version!r} (expected e.g. 10.3.0)") from None


def has_dla(version: str) -> bool:
    """Whether this TensorRT release can build or run DLA engines at all (the device decides the rest)."""
    low, high = NO_DLA_RELEASES
    return not low <= tensorrt_release(version) < high


class EngineCompatibilityError(ModelError):
    """An engine built for another TensorRT version or GPU, or one without its sidecar."""


def require_tensorrt() -> None:
    """Fail with the install command unless a real ``tensorrt`` module of 10.0 or newer can be imported.

    A ``tensorrt`` folder holding only type stubs imports as an empty namespace package, so
    "importable" alone is not enough: a real TensorRT has a ``__file__``. The version is checked here,
    before any other TensorRT or CUDA call, so an old TensorRT is one line rather than an AttributeError
    in the middle of a build.
    """
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is needed for engines but cannot be imported ({error}); {TENSORRT_INSTALL}"
        ) from None
    if getattr(module, "__file__", None) is None:
        raise TensorRTUnavailable(
            f"TensorRT is needed for engines but 'tensorrt' here is only a stub package; {TENSORRT_INSTALL}"
        )
    version = str(getattr(module, "__version__", "unknown"))
    if tensorrt_release(version) < MIN_TENSORRT:
        raise TensorRTVersionError(
            f"TensorRT {version} is installed ({module.__file__}) but poet-edge needs TensorRT "
            f"{'.'.join(map(str, MIN_TENSORRT))} or newer (strongly typed networks); JetPack 6 ships 10.3, "
            f'on x86: pip install "poet-edge[tensorrt]"'
        )


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``: the model info that travels with the engine."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_command(onnx: str | Path, precision: str, engine: str | Path, max_batch: int | None = None) -> str:
    """The ``poet-build-engine`` line that rebuilds an engine from its (already calibrated) precision ONNX."""
    batch = f" --max-batch {max_batch}" if max_batch is not None else ""
    return f"poet-build-engine {onnx} --{precision}{batch} -o {engine}"


def rebuild_command(info: ModelInfo, engine_path: Path) -> str:
    """The rebuild command for an engine, from the ONNX its sidecar names."""
    onnx = info.extra.get("onnx", {}).get("path", "MODEL.onnx")
    return build_command(onnx, info.precision, engine_path, None if info.batch else info.max_batch)


def write_sidecar(engine_path: str | Path, info: ModelInfo) -> Path:
    """Write ``<engine>.json`` atomically; returns its path."""
    path = sidecar_path(engine_path)
    write_json(path, info.to_dict(), indent=2)
    return path


def read_sidecar(engine_path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` beside an engine, or an error naming the file and how to get it back."""
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineCompatibilityError(
            f"engine {engine_path} has no sidecar {path.name}: without it the input size, preprocessing and "
            f"the TensorRT/GPU it was built for are unknown; rebuild the engine with poet-build-engine, which "
            f"writes both"
        )
    try:
        return ModelInfo.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as error:
        raise EngineCompatibilityError(f"sidecar {path} of engine {engine_path} is not valid: {error}") from None


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is tied to: the TensorRT version and the GPU's compute capability ("8.7")."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
        }

    @classmethod
    def from_info(cls, info: ModelInfo, engine_path: Path) -> EngineTarget:
        """The target a sidecar records (``extra["tensorrt"]``), or an error naming the engine."""
        recorded = info.extra.get("tensorrt", {})
        try:
            return cls(str(recorded["version"]), str(recorded["gpu_name"]), str(recorded["compute_capability"]))
        except (KeyError, TypeError):
            raise EngineCompatibilityError(
                f"sidecar {sidecar_path(engine_path).name} of engine {engine_path} does not say which TensorRT "
                f"version and GPU the engine was built for; rebuild it: {rebuild_command(info, engine_path)}"
            ) from None

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute capability {self.compute_capability})"


def running_target(device: int = 0) -> EngineTarget:
    """The TensorRT version imported here and the compute capability of CUDA device ``device``."""
    require_tensorrt()
    import tensorrt as trt

    from poet.runtime.cuda_memory import device_info

    gpu = device_info(device)
    return EngineTarget(trt.__version__, gpu.name, gpu.compute_capability)


def check_compatibility(
    info: ModelInfo, engine_path: str | Path, running: EngineTarget | None = None, *, device: int = 0
) -> None:
    """Refuse, before TensorRT deserializes it, an engine built for another TensorRT version or GPU generation.

    ``running`` defaults to this machine (:func:`running_target` of ``device``). Another GPU model of the
    same compute capability is allowed with a warning: the engine runs, its tactics may not be the fastest.
    """
    engine_path = Path(engine_path)
    built = EngineTarget.from_info(info, engine_path)
    running = running or running_target(device)
    mismatches = []
    if built.tensorrt_version != running.tensorrt_version:
        mismatches.append(f"TensorRT {built.tensorrt_version} but this machine has {running.tensorrt_version}")
    if built.compute_capability != running.compute_capability:
        mismatches.append(
            f"compute capability {built.compute_capability} ({built.gpu_name}) but this GPU, "
            f"{running.gpu_name}, is {running.compute_capability}"
        )
    if mismatches:
        raise EngineCompatibilityError(
            f"engine {engine_path} cannot run here: it was built for {' and '.join(mismatches)}. Engines are "
            f"tied to both; rebuild it on this machine from its ONNX: {rebuild_command(info, engine_path)}"
        )
    if built.gpu_name != running.gpu_name:
        log.warning(
            "engine %s was built on %s and runs on %s (same compute capability %s): it works, but rebuilding "
            "here may give faster kernels",
            engine_path,
            built.gpu_name,
            running.gpu_name,
            running.compute_capability,
        )
