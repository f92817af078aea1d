"""One table of model formats and one loader for all of them, so apps never pick a backend class by hand.

A backend turns an ``images``/``mask`` batch into the model's named outputs; everything around it
(letterbox, batching, decoding) lives in :class:`poet.runtime.PoseEstimator` and is shared by all
backends. The TensorRT and OpenVINO backends are imported only when they are asked for, so ONNX Runtime
users need neither TensorRT, CUDA nor OpenVINO.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from poet.errors import BackendError, ModelError
from poet.modelinfo import DECODED_OUTPUTS, IMAGES, MASK, UINT8_NHWC, ModelInfo, info_from_metadata
from poet.processing import KEYPOINT_OUTPUTS, NUM_CLASSES
from poet.skeleton import NUM_KEYPOINTS

# File suffix -> backend name; "auto" looks the model's suffix up here.
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".xml": "openvino"}
BACKENDS = ("onnxruntime", "tensorrt", "openvino")
# OpenVINO's precisions for float ops (poet-edge name -> its INFERENCE_PRECISION_HINT); fp32 unless asked.
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
# ONNX Runtime execution providers that "auto" uses when installed, best first (CPU always works).
AUTO_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

Provider = str | tuple[str, dict[str, Any]]


class Backend(Protocol):
    """What :class:`poet.runtime.PoseEstimator` needs from an inference backend."""

    info: ModelInfo
    max_batch: int
    thread_safe: bool  # whether concurrent infer calls are safe; PoseEstimator serialises them otherwise

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """One batch (``images`` as ``info.input_format`` says, ``mask`` True on padding) -> outputs by name."""
        ...


class OnnxRuntimeBackend:
    """An exported poet-edge ONNX model in ONNX Runtime; preprocessing is read from its metadata."""

    thread_safe = True  # ORT runs concurrent calls on one session

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
            lines = str(error).strip().splitlines()
            reason = load_failure(self.path, lines[0] if lines else type(error).__name__)
            raise ModelError(f"{self.path} is not a loadable ONNX model: {reason}") from None
        self.info = info_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.max_batch = self.info.batch or self.info.max_batch
        check_graph_io(
            self.path,
            self.info,
            {node.name: (_ORT_TYPES.get(node.type, node.type), node.shape) for node in self.session.get_inputs()},
            {node.name: node.shape for node in self.session.get_outputs()},
        )
        self.output_names = list(self.info.output_names)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, best first."""
        return list(self.session.get_providers())

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {IMAGES: images, MASK: mask})
        return dict(zip(self.output_names, outputs, strict=True))


# ONNX Runtime's element type names -> numpy's, the names check_graph_io compares.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
Shape = Sequence[Any] | None  # ints for fixed dimensions, names or None for symbolic ones


def check_graph_io(
    path: str | Path, info: ModelInfo, inputs: dict[str, tuple[str, Shape]], outputs: dict[str, Shape]
) -> None:
    """Fail at load time, naming the file, if the graph's inputs or outputs disagree with its own metadata.

    ``inputs`` maps each input name to its numpy element type name and shape, ``outputs`` each output name to
    its shape, as the backend reads them from the loaded graph. Element types, ranks and every fixed dimension
    are compared with what the metadata promises (input size, layout, batch, number of queries), so a
    mismatched file fails here and not on its first frame. Symbolic dimensions (a dynamic batch) are accepted
    where the metadata's batch can take them. One check for every backend that reads a graph.
    """
    if set(inputs) != {IMAGES, MASK}:
        raise ModelError(f"{path} has inputs {sorted(inputs)}; a poet-edge model has {IMAGES!r} and {MASK!r}")
    height, width = info.preprocess.input_size
    batch: int | str = info.batch if info.batch is not None else f"batch<={info.max_batch}"
    if info.input_format == UINT8_NHWC:
        images_type, images_shape = "uint8", [batch, height, width, 3]
    else:
        images_type, images_shape = "float32", [batch, 3, height, width]
    expected = {IMAGES: (images_type, images_shape), MASK: ("bool", [batch, height, width])}
    for name, (kind, shape) in expected.items():
        actual_type, actual_shape = inputs[name]
        if actual_type != kind:
            raise ModelError(
                f"{path}: input {name!r} is {actual_type} {_shape_text(actual_shape)} but its metadata says "
                f"{kind} {_shape_text(shape)} ({info.input_format})"
            )
        _check_shape(path, info, "input", name, actual_shape, shape)
    missing = set(info.output_names) - set(outputs)
    if missing:
        raise ModelError(f"{path} lacks the outputs {sorted(missing)} its metadata promises")
    queries = info.num_queries
    if info.output_names == DECODED_OUTPUTS:
        promised = {"scores": [batch, queries], "keypoints": [batch, queries, NUM_KEYPOINTS, 3]}
    else:
        promised = {
            "pred_logits": [batch, queries, NUM_CLASSES + 1],
            "pred_kpts": [batch, queries, KEYPOINT_OUTPUTS],
        }
    for name, shape in promised.items():
        # The outputs' batch dimension is not compared: the runtime keeps the rows of the images it gave.
        _check_shape(path, info, "output", name, outputs[name], shape, skip_batch=True)


def _check_shape(
    path: str | Path,
    info: ModelInfo,
    role: str,
    name: str,
    actual: Shape,
    expected: list[Any],
    skip_batch: bool = False,
) -> None:
    """The graph's ``actual`` shape (ints, symbolic names or None) against the metadata's ``expected``."""
    if not actual:  # no shape recorded in the graph: nothing to compare
        return
    problem = len(actual) != len(expected)
    for index, (have, want) in enumerate(zip(actual, expected, strict=False)):
        if problem or not isinstance(have, int) or (skip_batch and index == 0):
            continue
        # A dynamic batch in the metadata (a name) is met by a fixed one only when both allow just 1 image.
        dynamic = index == 0 and isinstance(want, str)
        problem = not (info.max_batch == 1 and have == 1) if dynamic else have != want
    if problem:
        raise ModelError(
            f"{path}: {role} {name!r} has shape {_shape_text(actual)} in the graph but its metadata "
            f"says {_shape_text(expected)}"
        )


def _shape_text(shape: Sequence[Any] | None) -> str:
    """``[2, 3, 64, 64]``, with symbolic dimensions by name and unknown ones as ``?``."""
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def load_failure(path: Path, reason: str) -> str:
    """Why a backend could not open ``path``: its ``reason``, unless the file is a PyTorch checkpoint given instead."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        head = b""
    if head == b"PK\x03\x04" or head[:1] == b"\x80":
        return "it is a PyTorch checkpoint (torch.save file), not an ONNX model; export it with poet-export"
    return reason


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
        raise BackendError(f"backend must be 'auto' or one of {', '.join(BACKENDS)}, got {backend!r}")
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
    precision: str | None = None,
    timeout: float | None = None,
) -> Backend:
    """Open a model with the backend its suffix (or ``backend``) names, or the model a Triton URL names.

    ``threads`` applies to ONNX Runtime and OpenVINO; ``providers`` and ``spinning`` (False: ORT's idle
    threads sleep, leaving the cores to other work) to ONNX Runtime; ``device`` and ``cuda_graph`` to
    TensorRT; ``precision`` (``fp32``, the default, or ``bf16``) is OpenVINO's precision for float ops. ONNX
    Runtime and TensorRT run the precision their file was made in, so they take no ``precision``.
    ``grpc://HOST:PORT/NAME`` or ``http://HOST:PORT/NAME`` runs on that server, whose backend and precision
    were chosen when it started (``poet-serve --backend/--precision``); ``timeout`` bounds each of its requests
    in seconds.
    """
    if isinstance(path, str) and is_model_url(path):
        return _remote_backend(path, backend, threads=threads, precision=precision, timeout=timeout)
    path = Path(path)
    if timeout is not None:
        raise BackendError(f"a request timeout applies to a served model (grpc://HOST:PORT/NAME), not to {path}")
    if not path.exists():
        raise ModelError(f"model {path} not found")
    name = backend_name(path, backend)
    if precision is not None and name != "openvino":
        raise BackendError(
            f"precision {precision!r} chooses OpenVINO's float precision; {name} runs the precision its file "
            "was exported or built in (make another file with poet-export --precision)"
        )
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, providers=providers, threads=threads, spinning=spinning)
    if name == "openvino":
        from poet.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, precision=precision or "fp32", threads=threads)
    from poet.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, device=device, cuda_graph=cuda_graph)


def is_model_url(model: object) -> bool:
    """Whether ``model`` is a URL (``scheme://...``) rather than a file path: only a string can be."""
    return isinstance(model, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", model) is not None


def _remote_backend(
    url: str, backend: str, *, threads: int | None, precision: str | None, timeout: float | None
) -> Backend:
    """The served model at ``url``; the options that choose how a local model runs are refused for it."""
    chosen = {"backend": backend if backend != "auto" else None, "precision": precision, "threads": threads}
    for option, value in chosen.items():
        if value is not None:
            raise BackendError(
                f"{option} {value!r} does not apply to the served model {url}: the server chose its backend, "
                "precision and threads when it started (poet-serve --backend, --precision, --threads)"
            )
    from poet.runtime.triton_backend import TritonBackend

    return TritonBackend(url, timeout=timeout)
