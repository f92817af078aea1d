"""Run a poet-edge TensorRT engine: numpy in, numpy out, no PyTorch.

I/O goes by tensor name (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), the API of
TensorRT 10 and 11. Pinned host and device buffers are allocated for the largest batch seen and reused,
all work is queued on one stream, and for repeated shapes the copies and the engine can be replayed as
one CUDA graph, which removes most of the per-frame launch overhead on a Jetson.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poet.errors import ModelError
from poet.modelinfo import IMAGES, MASK, ModelInfo
from poet.runtime.compat import (
    EngineTarget,
    check_compatibility,
    has_dla,
    read_sidecar,
    rebuild_command,
    require_tensorrt,
)
from poet.runtime.cuda_memory import CudaError, CudaStream, PinnedBuffer, open_stream

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 for a dynamic dimension)."""
    return tuple(int(shape[index]) for index in range(len(shape)))


class TensorRTBackend:
    """A serialized engine with its sidecar, checked against this TensorRT and GPU before it is deserialized.

    ``infer`` takes batches of any size: larger than the engine's optimisation profile allows, it runs
    them in chunks. ``cuda_graph=True`` captures each new input shape once and replays it (falls back to
    plain execution, with a warning, where capture fails or only pycuda is installed).
    """

    thread_safe = False  # one execution context, stream and set of pinned buffers

    def __init__(self, engine_path: str | Path, *, device: int = 0, cuda_graph: bool = False) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ModelError(f"engine {self.path} not found")
        self.info: ModelInfo = read_sidecar(self.path)
        require_tensorrt()
        import tensorrt as trt

        self._cuda: CudaStream = open_stream(device)
        try:
            gpu = self._cuda.info
            check_compatibility(self.info, self.path, EngineTarget(trt.__version__, gpu.name, gpu.compute_capability))
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._set_dla_core(trt.__version__)
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise ModelError(
                    f"TensorRT could not deserialize {self.path} (its log above says why); rebuild it: "
                    f"{rebuild_command(self.info, self.path)}"
                )
            self._engine: trt.ICudaEngine = engine
            self._context: trt.IExecutionContext = engine.create_execution_context()
            names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
            self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
            self._check_tensors()
            self._dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in names}
            self._item_shapes = {name: dims(engine.get_tensor_shape(name))[1:] for name in self.input_names}
            self.max_batch = self._profile_max_batch()
        except BaseException:
            self._cuda.close()
            raise
        self.cuda_graph = cuda_graph and self._cuda.supports_graphs
        if cuda_graph and not self.cuda_graph:
            log.warning("CUDA graphs need cuda-python (only pycuda is installed): running %s without", self.path)
        self._buffers: dict[str, PinnedBuffer] = {}
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}  # inputs and outputs, as bound to the buffers
        self._graph: Any | None = None

    def _set_dla_core(self, version: str) -> None:
        """Put a DLA engine on the core it was built for; without this TensorRT loads it onto core 0."""
        core = self.info.extra.get("tensorrt", {}).get("build_options", {}).get("dla_core")
        if core is None:
            return
        if not has_dla(version):
            raise ModelError(f"engine {self.path} runs on DLA core {core}, and TensorRT {version} has no DLA support")
        self._runtime.DLA_core = int(core)

    def _check_tensors(self) -> None:
        """Fail at load time, naming the engine, if its tensors are not the ones its sidecar promises."""
        if set(self.input_names) != {IMAGES, MASK}:
            raise ModelError(
                f"engine {self.path} has inputs {sorted(self.input_names)}; a poet-edge engine has {IMAGES!r} "
                f"and {MASK!r}"
            )
        missing = set(self.info.output_names) - set(self.output_names)
        if missing:
            raise ModelError(f"engine {self.path} lacks the outputs {sorted(missing)} its sidecar promises")

    def _profile_max_batch(self) -> int:
        batch = self._engine.get_tensor_shape(IMAGES)[0]
        if batch > 0:
            return int(batch)
        return int(self._engine.get_tensor_profile_shape(IMAGES, 0)[2][0])

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """One batch (``images`` as ``info.input_format`` says, ``mask`` True on padding) -> outputs by name."""
        if images.shape[:1] != mask.shape[:1]:
            raise ValueError(f"images and mask disagree on the batch size: {images.shape[0]} vs {mask.shape[0]}")
        if images.shape[0] <= self.max_batch:
            return self._infer_batch({IMAGES: images, MASK: mask})
        chunks = [
            self._infer_batch(
                {IMAGES: images[start : start + self.max_batch], MASK: mask[start : start + self.max_batch]}
            )
            for start in range(0, images.shape[0], self.max_batch)
        ]
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in self.info.output_names}

    def _infer_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in arrays.items():
            self._check_input(name, array)
        shapes = {name: array.shape for name, array in arrays.items()}
        if shapes != self._input_shapes:
            self._set_shapes(shapes)
        for name, array in arrays.items():
            np.copyto(self._host(name), array, casting="same_kind")
        if self._graph is not None:
            self._cuda.launch_graph(self._graph)
        elif not self._enqueue():
            raise CudaError(f"TensorRT failed to execute {self.path} (its log above says why)")
        self._cuda.synchronize()
        if self.cuda_graph and self._graph is None:
            self._capture()
        return {name: self._host(name).copy() for name in self.info.output_names}

    def _check_input(self, name: str, array: np.ndarray) -> None:
        expected = self._item_shapes[name]
        fits = array.ndim == len(expected) + 1 and all(
            want in (-1, got) for want, got in zip(expected, array.shape[1:], strict=True)
        )
        if not fits or array.shape[0] < 1:
            wanted = ", ".join("?" if size < 0 else str(size) for size in expected)
            raise ValueError(f"{name} of shape {array.shape} does not fit engine {self.path}: expected (B, {wanted})")
        if not np.can_cast(array.dtype, self._dtypes[name], casting="same_kind"):
            raise ValueError(f"{name} is {array.dtype} but engine {self.path} takes {self._dtypes[name]}")

    def _set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """New input shapes: tell TensorRT, grow buffers where needed, rebind addresses, drop the old graph."""
        self._release_graph()
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, list(shape)):
                raise ValueError(f"engine {self.path} does not accept {name} of shape {shape}")
        all_shapes = {**shapes, **{name: dims(self._context.get_tensor_shape(name)) for name in self.output_names}}
        for name, shape in all_shapes.items():
            nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
            buffer = self._buffers.get(name)
            if buffer is None or buffer.nbytes < nbytes:
                if buffer is not None:
                    self._cuda.free(buffer)
                buffer = self._buffers[name] = self._cuda.allocate(nbytes)
            if not self._context.set_tensor_address(name, buffer.device):
                raise CudaError(f"TensorRT refused the device address of {name} for {self.path}")
        self._input_shapes = shapes
        self._shapes = {name: tuple(shape) for name, shape in all_shapes.items()}

    def _host(self, name: str) -> np.ndarray:
        return self._buffers[name].host_view(self._shapes[name], self._dtypes[name])

    def _nbytes(self, name: str) -> int:
        return int(np.prod(self._shapes[name])) * self._dtypes[name].itemsize

    def _enqueue(self) -> bool:
        """Queue input copies, the engine and output copies on the stream (also what a graph records)."""
        for name in self.input_names:
            self._cuda.copy_to_device(self._buffers[name], self._nbytes(name))
        if not self._context.execute_async_v3(self._cuda.handle):
            return False
        for name in self.output_names:
            self._cuda.copy_to_host(self._buffers[name], self._nbytes(name))
        return True

    def _capture(self) -> None:
        """Record the current shape's work as a CUDA graph, after one plain run as TensorRT requires."""
        reason = "CUDA refused to capture or instantiate the stream's work"
        try:
            self._graph = self._cuda.capture_graph(self._enqueue)
        except CudaError as error:
            reason = str(error)
        if self._graph is None:
            log.warning("CUDA graph capture failed for %s (%s): running without CUDA graphs", self.path, reason)
            self.cuda_graph = False

    def _release_graph(self) -> None:
        if self._graph is not None:
            self._cuda.destroy_graph(self._graph)
            self._graph = None

    def close(self) -> None:
        """Free the graph, the buffers, the engine and the stream now rather than at the process's exit."""
        self._release_graph()
        del self._context, self._engine
        self._buffers.clear()
        self._cuda.close()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
