"""One table of model formats and one loader for all of them, so apps never pick a backend class by hand.

A backend turns an ``images``/``mask`` batch into the model's named outputs; everything around it
(letterbox, batching, decoding) lives in :class:`poet.runtime.PoseEstimator` and is shared by all
backends. The TensorRT backend is imported only when an engine is loaded, so ONNX users need no
TensorRT or CUDA packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from poet.errors import ModelError
from poet.modelinfo import IMAGES, MASK, UINT8_NHWC, ModelInfo, info_from_metadata

# File suffix -> backend name; "auto" looks the model's suffix up here.
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
BACKENDS = ("onnxruntime", "tensorrt")
# ONNX Runtime execution providers that "auto" uses when installed, best first (CPU always works).
AUTO_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

Provider = str | tuple[str, dict[str, Any]]


class Backend(Protocol):
    """What :class:`poet.runtime.PoseEstimator` needs from an inference backend."""

    info: ModelInfo
    max_batch: int

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """One batch (``images`` as ``info.input_format`` says, ``mask`` True on padding) -> outputs by name."""
        ...


class OnnxRuntimeBackend:
    """An exported poet-edge ONNX model in ONNX Runtime; preprocessing is read from its metadata."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[Provider] | None = None,
        threads: int | None = None,
        spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model {self.path} not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        if not spinning:  # idle worker threads sleep instead of busy-waiting for the next run
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        chosen = list(providers) if providers is not None else auto_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=chosen)
        except Exception as error:  # ORT raises its own exception types for unreadable, invalid or unsupported files
            raise ModelError(f"{self.path} is not a loadable ONNX model: {error}") from None
        self.info = info_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.max_batch = self.info.batch or self.info.max_batch
        self._check_inputs()
        self.output_names = list(self.info.output_names)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, best first."""
        return list(self.session.get_providers())

    def _check_inputs(self) -> None:
        """Fail at load time, naming the file, if the graph's inputs disagree with its own metadata."""
        inputs = {node.name: node for node in self.session.get_inputs()}
        if set(inputs) != {IMAGES, MASK}:
            raise ModelError(f"{self.path} has inputs {sorted(inputs)}; a poet-edge model has {IMAGES!r} and {MASK!r}")
        expected_type = "tensor(uint8)" if self.info.input_format == UINT8_NHWC else "tensor(float)"
        if inputs[IMAGES].type != expected_type:
            raise ModelError(
                f"{self.path}: input {IMAGES!r} is {inputs[IMAGES].type} but its metadata says {self.info.input_format}"
            )
        missing = set(self.info.output_names) - {node.name for node in self.session.get_outputs()}
        if missing:
            raise ModelError(f"{self.path} lacks the outputs {sorted(missing)} its metadata promises")

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {IMAGES: images, MASK: mask})
        return dict(zip(self.output_names, outputs, strict=True))


def auto_providers(available: Sequence[str]) -> list[str]:
    """The installed providers among :data:`AUTO_PROVIDERS`, best first."""
    return [name for name in AUTO_PROVIDERS if name in available] or ["CPUExecutionProvider"]


def backend_name(path: Path, backend: str) -> str:
    """Resolve ``backend="auto"`` by file suffix; check an explicit name against the table."""
    if backend == "auto":
        name = BACKEND_BY_SUFFIX.get(path.suffix.lower())
        if name is None:
            raise ModelError(
                f"{path}: cannot tell the model format from the suffix; expected {sorted(BACKEND_BY_SUFFIX)}"
            )
        return name
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def load_backend(
    path: str | Path,
    backend: str = "auto",
    *,
    providers: Sequence[Provider] | None = None,
    threads: int | None = None,
    spinning: bool = True,
    device: int = 0,
    cuda_graph: bool = False,
) -> Backend:
    """Open a model with the backend its suffix (or ``backend``) names.

    ``providers``, ``threads`` and ``spinning`` (False: ORT's idle threads sleep, leaving the cores to other
    work) apply to ONNX Runtime, ``device`` and ``cuda_graph`` to TensorRT.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model {path} not found")
    name = backend_name(path, backend)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, providers=providers, threads=threads, spinning=spinning)
    from poet.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, device=device, cuda_graph=cuda_graph)
