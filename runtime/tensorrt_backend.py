"""Run a poet-edge TensorRT engine: numpy in, numpy out, no PyTorch.

I/O goes by tensor name (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), the API of
TensorRT 10 and 11. Pinned host and device buffers are allocated once and reused, all work is queued on
one stream, and for repeated shapes the copies and the engine can be replayed as one CUDA graph, which
removes most of the per-frame launch overhead on a Jetson.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poet.errors import ModelError
from poet.modelinfo import IMAGES, MASK, ModelInfo
from poet.processing import fill_batch
from poet.runtime.compat import (
    DLA_RELEASE_NAMES,
    EngineTarget,
    check_compatibility,
    dla_core_of,
    has_dla,
    host_platform,
    read_sidecar,
    rebuild_command,
    require_tensorrt,
)
from poet.runtime.cuda_memory import CudaError, CudaStream, PinnedBuffer, open_stream
from poet.runtime.tensorrt_log import MESSAGES, tensorrt_logger

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 for a dynamic dimension)."""
    return tuple(int(shape[index]) for index in range(len(shape)))


@dataclass(eq=False)
class Binding:
    """One execution context with its input shapes set and its tensors bound to the shared buffers.

    A CUDA graph fixes the shapes, the tensor addresses and the execution context it was captured with, so
    with ``cuda_graph=True`` each batch size gets its own binding and graph; without graphs one binding is
    re-shaped as the batch size changes.
    """

    context: trt.IExecutionContext
    shapes: Shapes  # inputs and outputs
    buffers_generation: int = -1  # which allocation of the buffers the context's addresses point into
    graph: Any | None = None


@dataclass(eq=False)
class EngineObjects:
    """The TensorRT objects of a backend, kept apart from it so that its cleanup can run without it."""

    runtime: trt.Runtime
    engine: trt.ICudaEngine
    bindings: dict[tuple[int, ...], Binding] = field(default_factory=dict)

    def graphs(self) -> list[Any]:
        return [binding.graph for binding in self.bindings.values() if binding.graph is not None]


def release_engine(cuda: CudaStream, objects: EngineObjects) -> None:
    """Destroy graphs, execution contexts, engine and runtime (in that order, as TensorRT requires) with the
    device current, then the buffers and stream; on whichever thread the backend is closed or collected."""
    if cuda.closed:
        return
    try:
        with cuda.current():
            for graph in objects.graphs():
                cuda.destroy_graph(graph)
            objects.bindings.clear()
            del objects.engine, objects.runtime
    finally:
        cuda.close()


class TensorRTBackend:
    """A serialized engine with its sidecar, checked against this TensorRT, GPU and platform before it is
    deserialized.

    ``infer`` takes batches of any size: larger than the engine's optimisation profile allows, it runs
    them in chunks; a fixed-batch engine gets its last, smaller chunk padded. ``cuda_graph=True`` captures
    each batch size once (one execution context and graph per batch size seen, at most the profile's
    largest batch of them) and replays it; it falls back to plain execution, with a warning, where capture
    fails or only pycuda is installed. Calls may come from any thread, one at a time. ``close()`` frees the
    GPU memory now; a backend dropped without it frees it when it is garbage collected.
    """

    thread_safe = False  # one stream and set of pinned buffers

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
            here = EngineTarget(trt.__version__, gpu.name, gpu.compute_capability, host_platform())
            check_compatibility(self.info, self.path, here)
            with self._cuda.current():
                self._objects = self._deserialize(trt)
            engine = self._objects.engine
            names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
            self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
            self._check_tensors()
            self._dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in names}
            self._item_shapes = {name: dims(engine.get_tensor_shape(name))[1:] for name in self.input_names}
            fixed = int(engine.get_tensor_shape(IMAGES)[0])
            self.fixed_batch: int | None = fixed if fixed > 0 else None
            self.max_batch = fixed if fixed > 0 else int(engine.get_tensor_profile_shape(IMAGES, 0)[2][0])
        except BaseException:
            self._cuda.close()
            raise
        self._finalizer = weakref.finalize(self, release_engine, self._cuda, self._objects)
        self._finalizer.atexit = False  # at the process's exit the driver frees everything itself
        self.cuda_graph = cuda_graph and self._cuda.supports_graphs
        if cuda_graph and not self.cuda_graph:
            log.warning("CUDA graphs need cuda-python (only pycuda is installed): running %s without", self.path)
        self._buffers: dict[str, PinnedBuffer] = {}
        self._buffers_generation = 0
        self.dla_layers = self._report_dla()

    def _deserialize(self, trt: Any) -> EngineObjects:
        """The runtime and engine, on the sidecar's DLA core; TensorRT's own errors quoted if it refuses."""
        runtime = trt.Runtime(tensorrt_logger())
        self._set_dla_core(runtime, trt.__version__)
        mark = MESSAGES.mark()
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(
                f"TensorRT could not deserialize {self.path}{MESSAGES.quote(mark)}; rebuild it: "
                f"{rebuild_command(self.info, self.path)}"
            )
        return EngineObjects(runtime, engine)

    def _set_dla_core(self, runtime: trt.Runtime, version: str) -> None:
        """Put a DLA engine on the core it was built for; without this TensorRT loads it onto core 0. A device
        without that core is said in one line, before TensorRT tries and fails generically."""
        core = dla_core_of(self.info)
        if core is None:
            return
        if not has_dla(version):
            raise ModelError(
                f"engine {self.path} runs on DLA core {core}, and TensorRT {version} has no DLA support (DLA runs "
                f"with {DLA_RELEASE_NAMES}); rebuild it for the GPU: "
                f"{rebuild_command(self.info, self.path, keep_dla=False)}"
            )
        cores = int(runtime.num_DLA_cores)
        if not 0 <= core < cores:
            raise ModelError(
                f"engine {self.path} runs on DLA core {core}, and this device has {cores} DLA cores (an Orin Nano "
                f"has none); rebuild it for the GPU: {rebuild_command(self.info, self.path, keep_dla=False)}"
            )
        runtime.DLA_core = core

    def _report_dla(self) -> int | None:
        """Say at load how many layers run on DLA, as the build counted them: a DLA build's fallback to the GPU
        is silent, so this is where a user learns that an engine meant for DLA runs on the GPU."""
        core = dla_core_of(self.info)
        if core is None:
            return None
        placement = self.info.extra.get("tensorrt", {}).get("dla")
        if not placement:
            log.info("engine %s runs on DLA core %d; its sidecar does not say how many layers do", self.path, core)
            return None
        on_dla = int(placement["dla_layers"])
        log.info(
            "engine %s: %d layers on DLA core %d, %d on the GPU (as its build placed them)",
            self.path,
            on_dla,
            core,
            int(placement["gpu_layers"]),
        )
        if placement.get("warning"):
            log.warning("engine %s: %s", self.path, placement["warning"])
        return on_dla

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

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def graphs(self) -> int:
        """How many CUDA graphs are held: one per batch size seen, with ``cuda_graph=True``."""
        return 0 if self.closed else len(self._objects.graphs())

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """One batch (``images`` as ``info.input_format`` says, ``mask`` True on padding) -> outputs by name."""
        if images.shape[:1] != mask.shape[:1]:
            raise ValueError(f"images and mask disagree on the batch size: {images.shape[0]} vs {mask.shape[0]}")
        if self.closed:
            raise ModelError(f"engine {self.path} was closed")
        with self._cuda.current():
            chunks = [
                self._infer_chunk(images[start : start + self.max_batch], mask[start : start + self.max_batch])
                for start in range(0, max(1, images.shape[0]), self.max_batch)
            ]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in self.info.output_names}

    def _infer_chunk(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """At most ``max_batch`` images; padded with black, unmasked images to a fixed-batch engine's batch."""
        self._check_input(IMAGES, images)
        self._check_input(MASK, mask)
        count = images.shape[0]
        if self.fixed_batch is not None:
            images, mask = fill_batch(images, mask, self.fixed_batch)
        outputs = self._run({IMAGES: images, MASK: mask})
        return outputs if self.fixed_batch is None else {name: value[:count] for name, value in outputs.items()}

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self._binding({name: array.shape for name, array in arrays.items()})
        for name, array in arrays.items():
            np.copyto(self._host(binding, name), array, casting="same_kind")
        if binding.graph is not None:
            self._cuda.launch_graph(binding.graph)
        else:
            mark = MESSAGES.mark()
            if not self._enqueue(binding):
                raise CudaError(f"TensorRT failed to execute {self.path}{MESSAGES.quote(mark)}")
        self._cuda.synchronize()
        if self.cuda_graph and binding.graph is None:
            self._capture(binding)
        return {name: self._host(binding, name).copy() for name in self.info.output_names}

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

    def _binding(self, inputs: Shapes) -> Binding:
        """The binding for these input shapes: a new execution context per shape while graphs are on, else the
        one context re-shaped; tensor addresses re-set where the buffers were reallocated since."""
        bindings = self._objects.bindings
        key = tuple(dim for name in self.input_names for dim in inputs[name])
        binding = bindings.get(key)
        if binding is None:
            if self.cuda_graph or not bindings:
                context = self._objects.engine.create_execution_context()
                if context is None:
                    raise CudaError(f"TensorRT could not create an execution context for {self.path}")
            else:
                context = bindings.pop(next(iter(bindings))).context
            binding = bindings[key] = self._bind(context, inputs)
        if binding.buffers_generation != self._buffers_generation:
            self._set_addresses(binding)
        return binding

    def _bind(self, context: trt.IExecutionContext, inputs: Shapes) -> Binding:
        for name, shape in inputs.items():
            if not context.set_input_shape(name, list(shape)):
                raise ValueError(f"engine {self.path} does not accept {name} of shape {shape}")
        shapes = {**inputs, **{name: dims(context.get_tensor_shape(name)) for name in self.output_names}}
        self._reserve(shapes)
        return Binding(context, shapes)

    def _reserve(self, shapes: Shapes) -> None:
        """Grow the buffers to fit ``shapes``: to the profile's largest batch at once while graphs are on (a
        reallocation would invalidate every graph's recorded addresses), else to the batch at hand."""
        batch = shapes[IMAGES][0]
        capacity = max(batch, self.max_batch) if self.cuda_graph else batch
        grown = False
        for name, shape in shapes.items():
            nbytes = capacity * int(np.prod(shape[1:])) * self._dtypes[name].itemsize
            buffer = self._buffers.get(name)
            if buffer is None or buffer.nbytes < nbytes:
                if buffer is not None:
                    self._cuda.free(buffer)
                self._buffers[name] = self._cuda.allocate(nbytes)
                grown = True
        if grown:
            self._buffers_generation += 1
            self._release_graphs()

    def _set_addresses(self, binding: Binding) -> None:
        for name in binding.shapes:
            if not binding.context.set_tensor_address(name, self._buffers[name].device):
                raise CudaError(f"TensorRT refused the device address of {name} for {self.path}")
        binding.buffers_generation = self._buffers_generation

    def _host(self, binding: Binding, name: str) -> np.ndarray:
        return self._buffers[name].host_view(binding.shapes[name], self._dtypes[name])

    def _nbytes(self, binding: Binding, name: str) -> int:
        return int(np.prod(binding.shapes[name])) * self._dtypes[name].itemsize

    def _enqueue(self, binding: Binding) -> bool:
        """Queue input copies, the engine and output copies on the stream (also what a graph records)."""
        for name in self.input_names:
            self._cuda.copy_to_device(self._buffers[name], self._nbytes(binding, name))
        if not binding.context.execute_async_v3(self._cuda.handle):
            return False
        for name in self.output_names:
            self._cuda.copy_to_host(self._buffers[name], self._nbytes(binding, name))
        return True

    def _capture(self, binding: Binding) -> None:
        """Record this binding's work as a CUDA graph, after one plain run as TensorRT requires; on failure drop
        every graph and run plainly from now on."""
        reason = "CUDA refused to capture or instantiate the stream's work"
        graph = None
        try:
            graph = self._cuda.capture_graph(lambda: self._enqueue(binding))
        except CudaError as error:
            reason = str(error)
        if graph is None:
            log.warning("CUDA graph capture failed for %s (%s): running without CUDA graphs", self.path, reason)
            self.cuda_graph = False
            self._release_graphs()
        else:
            binding.graph = graph

    def _release_graphs(self) -> None:
        for binding in self._objects.bindings.values():
            if binding.graph is not None:
                self._cuda.destroy_graph(binding.graph)
                binding.graph = None

    def close(self) -> None:
        """Free the graphs, the execution contexts, the engine, the buffers and the stream now rather than at
        garbage collection; a second call does nothing."""
        self._buffers.clear()
        self._finalizer()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
