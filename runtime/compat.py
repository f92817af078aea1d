"""Whether a TensorRT engine can run here: its JSON sidecar, the running TensorRT and GPU, and a clear refusal.

A serialized engine only runs under the TensorRT version that built it, on GPUs of the compute
capability it was built for, and on the platform (CPU architecture, OS, Jetson or not) it was built on:
"serialized engines are not portable across platforms". Otherwise TensorRT fails with an obscure
deserialization error or, worse, runs slowly. ``poet-build-engine`` records all three in ``<engine>.json``
and the runtime compares them before deserializing. Torch- and onnx-free, so the runtime and
``poet.optimize.engine`` share it.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import re
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
# The TensorRT releases that run DLA on JetPack, as NVIDIA's DLA guide lists them: 10.0 to 10.7 ("TensorRT 10.7
# was the last 10.x release that supported DLA") and 11.4.1 on JetPack 7.2.2 or later. 10.8 to 10.x, 11.0 to 11.3,
# 11.4.0 (DLA only on Windows on ARM) and 11.5 (no JetPack) have none there. A later release with DLA needs adding.
DLA_RELEASES: tuple[tuple[int, ...], ...] = (*((10, minor) for minor in range(8)), (11, 4, 1))
DLA_RELEASE_NAMES = "TensorRT 10.0 to 10.7 (JetPack 6 ships 10.3), or 11.4.1 on JetPack 7.2.2 or later"
# Where a Jetson's Linux for Tegra names its release, e.g. "# R36 (release), REVISION: 4.3, ...".
TEGRA_RELEASE_FILE = Path("/etc/nv_tegra_release")


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
    """Whether this TensorRT release can build or run DLA engines on JetPack at all (the device decides the rest).

    A positive list: a release not known to have DLA is taken to have none, so a DLA build on it stops in one
    line instead of silently putting every layer on the GPU.
    """
    patch_release = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    return tensorrt_release(version) in DLA_RELEASES or patch_release in DLA_RELEASES


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


def dla_core_of(info: ModelInfo) -> int | None:
    """The DLA core an engine's sidecar says it was built for, None for a GPU engine."""
    core = info.extra.get("tensorrt", {}).get("build_options", {}).get("dla_core")
    return None if core is None else int(core)


def rebuild_command(info: ModelInfo, engine_path: Path, *, keep_dla: bool = True) -> str:
    """The rebuild command for an engine, from the ONNX its sidecar names, on the DLA core it was built for
    unless ``keep_dla`` is False (for a device without DLA)."""
    onnx = info.extra.get("onnx", {}).get("path", "MODEL.onnx")
    command = build_command(onnx, info.precision, engine_path, None if info.batch else info.max_batch)
    core = dla_core_of(info)
    return command + (f" --dla-core {core}" if keep_dla and core is not None else "")


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
class HostPlatform:
    """The machine an engine was built on, as far as engines care: CPU architecture, OS, and on a Jetson the
    Linux for Tegra release (``"R36.4.3"``, which names the JetPack: R36.4 is JetPack 6.1 and 6.2)."""

    machine: str
    system: str
    l4t_release: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "system": self.system, "l4t_release": self.l4t_release}

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> HostPlatform:
        release = recorded.get("l4t_release")
        return cls(str(recorded["machine"]), str(recorded["system"]), None if release is None else str(release))

    def describe(self) -> str:
        jetson = f", Jetson L4T {self.l4t_release}" if self.l4t_release else ""
        return f"{self.system} {self.machine}{jetson}"

    def portable_to(self, other: HostPlatform) -> bool:
        """Whether an engine built here can load there: same architecture and OS, both Jetsons or neither."""
        return (self.machine, self.system, self.l4t_release is None) == (
            other.machine,
            other.system,
            other.l4t_release is None,
        )


def l4t_release(text: str) -> str | None:
    """``"# R36 (release), REVISION: 4.3, GCID: ..."`` (a Jetson's release file) -> ``"R36.4.3"``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match[1]}.{match[2]}" if match else None


def host_platform(tegra_release_file: Path = TEGRA_RELEASE_FILE) -> HostPlatform:
    """This machine's :class:`HostPlatform`."""
    try:
        release = l4t_release(tegra_release_file.read_text(errors="replace"))
    except OSError:
        release = None
    return HostPlatform(platform.machine(), platform.system(), release)


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is tied to: the TensorRT version, the GPU's compute capability ("8.7") and the platform
    (None in sidecars written before poet-edge recorded it)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    platform: HostPlatform | None = None

    def to_dict(self) -> dict[str, Any]:
        recorded = {
            "version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
        }
        return recorded | ({"platform": self.platform.to_dict()} if self.platform else {})

    @classmethod
    def from_info(cls, info: ModelInfo, engine_path: Path) -> EngineTarget:
        """The target a sidecar records (``extra["tensorrt"]``), or an error naming the engine."""
        recorded = info.extra.get("tensorrt", {})
        try:
            built_on = recorded.get("platform")
            return cls(
                str(recorded["version"]),
                str(recorded["gpu_name"]),
                str(recorded["compute_capability"]),
                None if built_on is None else HostPlatform.from_dict(built_on),
            )
        except (KeyError, TypeError, AttributeError):
            raise EngineCompatibilityError(
                f"sidecar {sidecar_path(engine_path).name} of engine {engine_path} does not say which TensorRT "
                f"version and GPU the engine was built for; rebuild it: {rebuild_command(info, engine_path)}"
            ) from None

    def describe(self) -> str:
        where = f", {self.platform.describe()}" if self.platform else ""
        return (
            f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute capability {self.compute_capability}{where})"
        )


def running_target(device: int = 0) -> EngineTarget:
    """The TensorRT version imported here, the compute capability of CUDA device ``device`` and this platform."""
    require_tensorrt()
    import tensorrt as trt

    from poet.runtime.cuda_memory import device_info

    gpu = device_info(device)
    return EngineTarget(trt.__version__, gpu.name, gpu.compute_capability, host_platform())


def check_compatibility(
    info: ModelInfo, engine_path: str | Path, running: EngineTarget | None = None, *, device: int = 0
) -> None:
    """Refuse, before TensorRT deserializes it, an engine built for another TensorRT version, GPU generation or
    platform.

    ``running`` defaults to this machine (:func:`running_target` of ``device``). Another GPU model of the
    same compute capability is allowed with a warning: the engine runs, its tactics may not be the fastest;
    so is another L4T release of the same TensorRT on a Jetson.
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
    if built.platform and running.platform and not built.platform.portable_to(running.platform):
        mismatches.append(f"{built.platform.describe()} but this machine is {running.platform.describe()}")
    if mismatches:
        raise EngineCompatibilityError(
            f"engine {engine_path} cannot run here: it was built for {' and '.join(mismatches)}. Engines are "
            f"tied to the TensorRT version, the GPU generation and the platform; rebuild it on this machine from "
            f"its ONNX: {rebuild_command(info, engine_path)}"
        )
    if built.platform is None:
        log.warning(
            "engine %s: its sidecar does not record the platform it was built on (built before poet-edge recorded "
            "it), so only its TensorRT version and GPU are checked; rebuilding records it",
            engine_path,
        )
    elif running.platform and built.platform.l4t_release != running.platform.l4t_release:
        log.warning(
            "engine %s was built on L4T %s and runs on L4T %s with the same TensorRT: rebuild it if it fails to load",
            engine_path,
            built.platform.l4t_release,
            running.platform.l4t_release,
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
