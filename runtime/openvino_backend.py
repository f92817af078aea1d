"""OpenVINO as the CPU engine: the same poet-edge ONNX (or an OpenVINO IR made from it) at a chosen precision.

OpenVINO compiles float ops in bf16 by default on CPUs that have it (AVX512_BF16 or AMX), which moves
keypoints without being asked. Here the precision is explicit: ``fp32`` unless the caller asks for ``bf16``,
and ``bf16`` is refused in one line on a CPU without it rather than emulated slowly. INT8 needs no hint: a
Q/DQ model runs its quantized ops in INT8 and the rest in the chosen float precision. Imported only when an
OpenVINO model is loaded, so ONNX Runtime users need no OpenVINO.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np

from poet.errors import BackendError, ModelError
from poet.extras import missing_extra
from poet.modelinfo import IMAGES, MASK, METADATA_KEY, info_from_metadata
from poet.runtime.backends import INFERENCE_PRECISIONS, check_graph_io, load_failure

# File suffix -> the OpenVINO frontend that reads it.
FRONTENDS = {".onnx": "onnx", ".xml": "ir"}
# The capability OpenVINO's CPU plugin must list for each precision.
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16"}
DEVICE = "CPU"


def openvino_core() -> Any:
    """The process's one ``openvino.Core``; without the package, the one-line error naming the extra that brings it."""
    try:
        import openvino
    except ModuleNotFoundError as error:
        raise (missing_extra(error, "the openvino backend", ["openvino"]) or error) from None
    return _shared_core(openvino)


@functools.cache
def _shared_core(openvino: Any) -> Any:
    """One Core, as OpenVINO recommends, and not only to share its plugins: each Core's CPU plugin swaps in a
    signal stack of its own and puts the previous one back when it goes, so two released out of order (two
    cameras' estimators) left a freed one in place, and the next Python-handled signal (Ctrl-C) crashed the
    process (OpenVINO 2026.4)."""
    return openvino.Core()


def read_model(path: Path) -> Any:
    """The ``openvino.Model`` of a ``.onnx`` or IR ``.xml`` file, read by that format's frontend alone.

    ``Core.read_model`` would try every frontend on a damaged file (TensorFlow's prints parse errors on
    stderr) and then report only that none could read it; one frontend gives the reason.
    """
    from openvino.frontend import FrontEndManager

    framework = FRONTENDS.get(path.suffix.lower())
    if framework is None:
        raise ModelError(f"{path}: the openvino backend reads a poet-edge .onnx or OpenVINO IR .xml file")
    frontend = FrontEndManager().load_by_framework(framework)
    try:
        return frontend.convert(frontend.load(str(path)))
    except Exception as error:  # the frontends raise RuntimeError or their own GeneralFailure
        lines = [line for line in str(error).splitlines() if line.strip()]  # the last says why, the rest where
        reason = load_failure(path, lines[-1] if lines else type(error).__name__)
        raise ModelError(f"{path} is not a model OpenVINO can read: {reason}") from None


def check_precision(precision: str) -> str:
    """``precision`` if OpenVINO's CPU plugin takes it; otherwise a BackendError listing the valid ones."""
    if precision not in INFERENCE_PRECISIONS:
        raise BackendError(f"OpenVINO precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    return precision


class OpenVinoBackend:
    """A poet-edge ``.onnx`` or OpenVINO IR ``.xml`` compiled for this CPU; preprocessing comes from its metadata.

    ``threads`` sets OpenVINO's inference threads (default: its own choice, one per physical core). Each
    calling thread gets its own infer request, so concurrent calls are safe without a lock.
    """

    thread_safe = True

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None) -> None:
        self.path = Path(path)
        self.precision = check_precision(precision)
        if not self.path.is_file():
            raise ModelError(f"model {self.path} not found")
        core = openvino_core()
        capabilities = core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
        if _CAPABILITY[precision] not in capabilities:
            raise BackendError(
                f"this CPU cannot run OpenVINO in {precision} (it offers {', '.join(capabilities)}; bf16 needs "
                "AVX512_BF16 or AMX): use precision fp32"
            )
        model = read_model(self.path)
        key = ["framework", METADATA_KEY]  # where OpenVINO keeps the ONNX metadata, also in IR made from it
        metadata = {METADATA_KEY: model.get_rt_info(key).astype(str)} if model.has_rt_info(key) else {}
        self.info = info_from_metadata(metadata, self.path)
        self.max_batch = self.info.batch or self.info.max_batch
        check_graph_io(
            self.path,
            self.info,
            {port.any_name: (str(port.get_element_type().to_dtype()), _shape(port)) for port in model.inputs},
            {name: _shape(port) for port in model.outputs for name in port.get_names()},
        )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, DEVICE, config)
        self.output_names = list(self.info.output_names)
        self._outputs = [self.compiled.output(name) for name in self.output_names]
        self._local = threading.local()

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer({IMAGES: images, MASK: mask})
        return {name: results[port] for name, port in zip(self.output_names, self._outputs, strict=True)}


def _shape(port: Any) -> list[int | None]:
    """A port's shape with dynamic dimensions as None, as :func:`check_graph_io` takes it."""
    return [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
