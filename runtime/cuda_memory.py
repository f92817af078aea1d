"""Device memory, pinned host memory, one stream and CUDA graphs for the TensorRT backend.

Two small implementations of one interface: cuda-python (``cuda.bindings.runtime`` from 12.6 on and
in 13.x, ``cuda.cudart`` before) and pycuda as the fallback on systems that only have it (older
JetPack images). Every CUDA call is checked, and a failure names the call and CUDA's own message.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from poet.errors import PoetError
from poet.runtime.compat import TensorRTUnavailable

log = logging.getLogger(__name__)

CUDA_BINDINGS_INSTALL = "pip install cuda-python (or pycuda)"


class CudaError(PoetError):
    """A CUDA call failed (no device, out of memory, a driver too old for the runtime, ...)."""


@dataclass(frozen=True)
class DeviceInfo:
    """A CUDA device as engines care about it: its name and compute capability as ``"major.minor"``."""

    name: str
    compute_capability: str


@dataclass(eq=False)  # compared by identity: equality of the numpy fields is not a bool
class PinnedBuffer:
    """A pinned host array and a device allocation of the same size, for one tensor."""

    host: np.ndarray
    device: int
    nbytes: int

    def host_view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The first ``prod(shape)`` elements of the host memory, as an array of that shape and dtype."""
        size = int(np.prod(shape)) * dtype.itemsize
        return self.host[:size].view(dtype).reshape(shape)


class CudaStream(ABC):
    """One CUDA device and one stream: allocation, asynchronous copies, synchronisation, CUDA graphs.

    CUDA's current device (cuda-python) and pycuda's context stack are per host thread, so every call that
    touches the GPU runs inside :meth:`current`, on whichever thread calls it; callers that make several calls
    (the TensorRT backend's ``infer``) enter it once around them. Everything is freed by :meth:`close`, which
    may be called more than once, or when the stream is garbage collected without it.
    """

    supports_graphs = False

    def __init__(self, info: DeviceInfo, device: int) -> None:
        self.info = info
        self.device = device
        self._buffers: list[PinnedBuffer] = []
        self._local = threading.local()
        self._finalizer: weakref.finalize | None = None

    def _release_when_dropped(self, release: Callable[[], None]) -> None:
        """Run ``release`` (which must not refer to this object) once: at :meth:`close` or at garbage collection."""
        self._finalizer = weakref.finalize(self, release)
        self._finalizer.atexit = False  # at the process's exit the driver frees everything itself

    @property
    def closed(self) -> bool:
        return self._finalizer is None or not self._finalizer.alive

    @abstractmethod
    def _activate(self) -> AbstractContextManager[None]:
        """Make this stream's device (and context) current on the calling thread, and restore the old on exit."""

    @contextmanager
    def current(self) -> Iterator[None]:
        """This stream's device current on the calling thread for the block; nested entries switch once."""
        if self.closed:
            raise CudaError(f"the CUDA stream on device {self.device} is closed")
        depth = getattr(self._local, "depth", 0)
        with self._activate() if depth == 0 else nullcontext():
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth

    @property
    @abstractmethod
    def handle(self) -> int:
        """The stream as the integer TensorRT's ``execute_async_v3`` takes."""

    @abstractmethod
    def _allocate(self, nbytes: int) -> PinnedBuffer: ...

    @abstractmethod
    def _free(self, buffer: PinnedBuffer) -> None: ...

    @abstractmethod
    def _copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None: ...

    @abstractmethod
    def _copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None: ...

    @abstractmethod
    def _synchronize(self) -> None: ...

    def _capture_graph(self, enqueue: Callable[[], bool]) -> Any | None:
        return None

    def _launch_graph(self, graph: Any) -> None:
        raise NotImplementedError

    def _destroy_graph(self, graph: Any) -> None:
        raise NotImplementedError

    def allocate(self, nbytes: int) -> PinnedBuffer:
        """Pinned host and device memory of ``nbytes`` each, freed by :meth:`free` or :meth:`close`."""
        with self.current():
            buffer = self._allocate(max(1, nbytes))
        self._buffers.append(buffer)
        return buffer

    def free(self, buffer: PinnedBuffer) -> None:
        self._buffers.remove(buffer)
        with self.current():
            self._free(buffer)

    def copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        """Queue a copy of the first ``nbytes`` of ``buffer.host`` to ``buffer.device``."""
        with self.current():
            self._copy_to_device(buffer, nbytes)

    def copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        """Queue a copy of the first ``nbytes`` of ``buffer.device`` to ``buffer.host``."""
        with self.current():
            self._copy_to_host(buffer, nbytes)

    def synchronize(self) -> None:
        with self.current():
            self._synchronize()

    def capture_graph(self, enqueue: Callable[[], bool]) -> Any | None:
        """Record what ``enqueue`` queues on the stream as a launchable CUDA graph; None if that fails."""
        with self.current():
            return self._capture_graph(enqueue)

    def launch_graph(self, graph: Any) -> None:
        with self.current():
            self._launch_graph(graph)

    def destroy_graph(self, graph: Any) -> None:
        with self.current():
            self._destroy_graph(graph)

    def close(self) -> None:
        """Free every buffer and the stream; the object is unusable afterwards. A second call does nothing."""
        if self._finalizer is not None:
            self._finalizer()


@contextmanager
def cuda_python_device(cudart: ModuleType, device: int) -> Iterator[None]:
    """``device`` current on this thread for the block (``cudaSetDevice`` is per host thread), the old one after."""
    previous = check_cuda_python(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    if previous != device:
        check_cuda_python(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
    try:
        yield
    finally:
        if previous != device:
            check_cuda_python(cudart, cudart.cudaSetDevice(previous), f"cudaSetDevice({previous})")


def _free_cuda_python(cudart: ModuleType, buffer: PinnedBuffer) -> None:
    check_cuda_python(cudart, cudart.cudaFree(buffer.device), "cudaFree")
    check_cuda_python(cudart, cudart.cudaFreeHost(buffer.host.ctypes.data), "cudaFreeHost")


def _release_cuda_python(cudart: ModuleType, device: int, stream: Any, buffers: list[PinnedBuffer]) -> None:
    with cuda_python_device(cudart, device):
        while buffers:
            _free_cuda_python(cudart, buffers.pop())
        check_cuda_python(cudart, cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")


class CudaPythonStream(CudaStream):
    """NVIDIA's cuda-python runtime bindings: also gives CUDA graphs."""

    supports_graphs = True

    def __init__(self, cudart: ModuleType, device: int) -> None:
        self._rt = cudart
        super().__init__(cuda_python_device_info(cudart, device), device)
        with cuda_python_device(cudart, device):
            self._stream = self._check(
                cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
            )
        self._release_when_dropped(partial(_release_cuda_python, cudart, device, self._stream, self._buffers))

    def _check(self, result: tuple[Any, ...], call: str) -> Any:
        return check_cuda_python(self._rt, result, call)

    def _activate(self) -> AbstractContextManager[None]:
        return cuda_python_device(self._rt, self.device)

    @property
    def handle(self) -> int:
        return int(self._stream)

    def _allocate(self, nbytes: int) -> PinnedBuffer:
        host_pointer = self._check(self._rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes} bytes)")
        try:
            device_pointer = self._check(self._rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)")
        except CudaError:
            self._rt.cudaFreeHost(host_pointer)
            raise
        host = np.ctypeslib.as_array(ctypes.cast(int(host_pointer), ctypes.POINTER(ctypes.c_ubyte)), shape=(nbytes,))
        return PinnedBuffer(host=host, device=int(device_pointer), nbytes=nbytes)

    def _free(self, buffer: PinnedBuffer) -> None:
        _free_cuda_python(self._rt, buffer)

    def _copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpyAsync(buffer.device, buffer.host.ctypes.data, nbytes, kind, self._stream),
            "cudaMemcpyAsync (host to device)",
        )

    def _copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._rt.cudaMemcpyAsync(buffer.host.ctypes.data, buffer.device, nbytes, kind, self._stream),
            "cudaMemcpyAsync (device to host)",
        )

    def _synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _capture_graph(self, enqueue: Callable[[], bool]) -> Any | None:
        """Capture thread-locally (as trtexec does: other threads' CUDA calls are not disturbed); on any failure
        the capture is ended and CUDA's last error cleared, so the plain enqueue that follows still works."""
        rt = self._rt
        success = rt.cudaError_t.cudaSuccess
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        if rt.cudaStreamBeginCapture(self._stream, mode)[0] != success:
            rt.cudaGetLastError()
            return None
        queued = False
        try:
            queued = enqueue()
        finally:
            error, graph = rt.cudaStreamEndCapture(self._stream)
            if not queued or error != success:
                if error == success and graph is not None:
                    rt.cudaGraphDestroy(graph)
                rt.cudaGetLastError()
        if not queued or error != success:
            return None
        error, graph_exec = rt.cudaGraphInstantiate(graph, 0)
        rt.cudaGraphDestroy(graph)
        if error != success:
            rt.cudaGetLastError()
            return None
        return graph_exec

    def _launch_graph(self, graph: Any) -> None:
        self._check(self._rt.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")

    def _destroy_graph(self, graph: Any) -> None:
        self._check(self._rt.cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")


@contextmanager
def pycuda_context(driver: ModuleType, context: Any) -> Iterator[None]:
    """``context`` pushed on this thread's pycuda context stack for the block (the stack is per thread)."""
    context.push()
    try:
        yield
    finally:
        driver.Context.pop()


class _PyCudaResources:
    """What a :class:`PyCudaStream` owns, apart from it, so that its release needs no reference to the stream."""

    def __init__(self, driver: ModuleType, context: Any) -> None:
        self.driver = driver
        self.context = context
        self.stream: Any = None
        self.allocations: dict[int, Any] = {}
        self.buffers: list[PinnedBuffer] = []

    def free(self, buffer: PinnedBuffer) -> None:
        self.allocations.pop(buffer.device).free()
        pinned: Any = buffer.host.base  # pycuda's page-locked allocation behind the array
        pinned.free()

    def release(self) -> None:
        """Free in the stream's context, on whichever thread this runs, then let go of the primary context."""
        with pycuda_context(self.driver, self.context):
            while self.buffers:
                self.free(self.buffers.pop())
            self.stream = None  # pycuda destroys the stream now, while its context is current
        self.context.detach()


class PyCudaStream(CudaStream):
    """pycuda, where cuda-python is missing; TensorRT runs in the device's primary context, made current around
    every call."""

    def __init__(self, driver: ModuleType, device: int) -> None:
        self._driver = driver
        super().__init__(pycuda_device_info(driver, device), device)
        self._resources = _PyCudaResources(driver, driver.Device(device).retain_primary_context())
        self._buffers = self._resources.buffers
        with pycuda_context(driver, self._resources.context):
            self._resources.stream = driver.Stream()
        self._release_when_dropped(self._resources.release)

    def _activate(self) -> AbstractContextManager[None]:
        return pycuda_context(self._driver, self._resources.context)

    @property
    def _stream(self) -> Any:
        return self._resources.stream

    @property
    def handle(self) -> int:
        return int(self._stream.handle)

    def _allocate(self, nbytes: int) -> PinnedBuffer:
        try:
            host = self._driver.pagelocked_empty(nbytes, np.uint8)
            allocation = self._driver.mem_alloc(nbytes)
        except self._driver.Error as error:
            raise CudaError(f"CUDA allocation of {nbytes} bytes failed: {error}") from None
        self._resources.allocations[int(allocation)] = allocation
        return PinnedBuffer(host=host, device=int(allocation), nbytes=nbytes)

    def _free(self, buffer: PinnedBuffer) -> None:
        self._resources.free(buffer)

    def _copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self._driver.memcpy_htod_async(buffer.device, buffer.host[:nbytes], self._stream)

    def _copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self._driver.memcpy_dtoh_async(buffer.host[:nbytes], buffer.device, self._stream)

    def _synchronize(self) -> None:
        try:
            self._stream.synchronize()
        except self._driver.Error as error:
            raise CudaError(f"CUDA stream synchronize failed: {error}") from None


def check_cuda_python(cudart: ModuleType, result: tuple[Any, ...], call: str) -> Any:
    """cuda-python returns ``(error, value...)``: raise :class:`CudaError` on an error, else return the value."""
    error = result[0]
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1]
        message = cudart.cudaGetErrorString(error)[1]
        raise CudaError(f"CUDA {call} failed: {name.decode()}: {message.decode()}")
    values = result[1:]
    return values[0] if len(values) == 1 else values or None


def cuda_python_runtime() -> ModuleType | None:
    """cuda-python's runtime module under its 12.6+/13.x name, else its older name, else None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def pycuda_driver() -> ModuleType | None:
    try:
        driver = importlib.import_module("pycuda.driver")
    except ImportError:
        return None
    try:
        driver.init()
    except driver.Error as error:
        raise CudaError(f"CUDA cannot start through pycuda: {error}") from None
    return driver


def cuda_python_device_info(cudart: ModuleType, device: int) -> DeviceInfo:
    try:
        result = cudart.cudaGetDeviceCount()
    except RuntimeError as error:  # cuda-python 12.6 raises where the driver library is missing; later ones return it
        raise CudaError(f"CUDA cudaGetDeviceCount failed: no CUDA driver here ({error})") from None
    count = check_cuda_python(cudart, result, "cudaGetDeviceCount")
    if not 0 <= device < count:
        raise CudaError(f"CUDA device {device} does not exist: this machine has {count}")
    properties = check_cuda_python(cudart, cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
    return DeviceInfo(name=name.rstrip("\x00"), compute_capability=f"{properties.major}.{properties.minor}")


def pycuda_device_info(driver: ModuleType, device: int) -> DeviceInfo:
    count = driver.Device.count()
    if not 0 <= device < count:
        raise CudaError(f"CUDA device {device} does not exist: this machine has {count}")
    handle = driver.Device(device)
    major, minor = handle.compute_capability()
    return DeviceInfo(name=handle.name(), compute_capability=f"{major}.{minor}")


def _pycuda_or_fail() -> ModuleType:
    driver = pycuda_driver()
    if driver is None:
        raise TensorRTUnavailable(f"TensorRT engines need CUDA's Python bindings: {CUDA_BINDINGS_INSTALL}")
    return driver


def device_info(device: int = 0) -> DeviceInfo:
    """Name and compute capability of CUDA device ``device``, without creating a stream."""
    cudart = cuda_python_runtime()
    if cudart is not None:
        return cuda_python_device_info(cudart, device)
    return pycuda_device_info(_pycuda_or_fail(), device)


def open_stream(device: int = 0) -> CudaStream:
    """A stream on CUDA device ``device`` through cuda-python, or pycuda where cuda-python is missing."""
    cudart = cuda_python_runtime()
    if cudart is not None:
        return CudaPythonStream(cudart, device)
    return PyCudaStream(_pycuda_or_fail(), device)
