"""Device memory, pinned host memory, one stream and CUDA graphs for the TensorRT backend.

Two small implementations of one interface: cuda-python (``cuda.bindings.runtime`` from 12.6 on and
in 13.x, ``cuda.cudart`` before) and pycuda as the fallback on systems that only have it (older
JetPack images). Every CUDA call is checked, and a failure names the call and CUDA's own message.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
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
    """One CUDA device and one stream: allocation, asynchronous copies, synchronisation, CUDA graphs."""

    supports_graphs = False

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self._buffers: list[PinnedBuffer] = []

    @property
    @abstractmethod
    def handle(self) -> int:
        """The stream as the integer TensorRT's ``execute_async_v3`` takes."""

    @abstractmethod
    def _allocate(self, nbytes: int) -> PinnedBuffer: ...

    @abstractmethod
    def _free(self, buffer: PinnedBuffer) -> None: ...

    @abstractmethod
    def copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        """Queue a copy of the first ``nbytes`` of ``buffer.host`` to ``buffer.device``."""

    @abstractmethod
    def copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        """Queue a copy of the first ``nbytes`` of ``buffer.device`` to ``buffer.host``."""

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def _close_stream(self) -> None: ...

    def capture_graph(self, enqueue: Callable[[], bool]) -> Any | None:
        """Record what ``enqueue`` queues on the stream as a launchable CUDA graph; None if that fails."""
        return None

    def launch_graph(self, graph: Any) -> None:
        raise NotImplementedError

    def destroy_graph(self, graph: Any) -> None:
        raise NotImplementedError

    def allocate(self, nbytes: int) -> PinnedBuffer:
        """Pinned host and device memory of ``nbytes`` each, freed by :meth:`free` or :meth:`close`."""
        buffer = self._allocate(max(1, nbytes))
        self._buffers.append(buffer)
        return buffer

    def free(self, buffer: PinnedBuffer) -> None:
        self._buffers.remove(buffer)
        self._free(buffer)

    def close(self) -> None:
        """Free every buffer and the stream; the object is unusable afterwards."""
        while self._buffers:
            self._free(self._buffers.pop())
        self._close_stream()


class CudaPythonStream(CudaStream):
    """NVIDIA's cuda-python runtime bindings: also gives CUDA graphs."""

    supports_graphs = True

    def __init__(self, cudart: ModuleType, device: int) -> None:
        self._rt = cudart
        super().__init__(cuda_python_device_info(cudart, device))
        self._check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._stream = self._check(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )

    def _check(self, result: tuple[Any, ...], call: str) -> Any:
        return check_cuda_python(self._rt, result, call)

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
        self._check(self._rt.cudaFree(buffer.device), "cudaFree")
        self._check(self._rt.cudaFreeHost(buffer.host.ctypes.data), "cudaFreeHost")

    def copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpyAsync(buffer.device, buffer.host.ctypes.data, nbytes, kind, self._stream),
            "cudaMemcpyAsync (host to device)",
        )

    def copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._rt.cudaMemcpyAsync(buffer.host.ctypes.data, buffer.device, nbytes, kind, self._stream),
            "cudaMemcpyAsync (device to host)",
        )

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def capture_graph(self, enqueue: Callable[[], bool]) -> Any | None:
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

    def launch_graph(self, graph: Any) -> None:
        self._check(self._rt.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")

    def destroy_graph(self, graph: Any) -> None:
        self._check(self._rt.cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")

    def _close_stream(self) -> None:
        self._check(self._rt.cudaStreamDestroy(self._stream), "cudaStreamDestroy")


class PyCudaStream(CudaStream):
    """pycuda, where cuda-python is missing; TensorRT runs in the device's primary context, made current here."""

    def __init__(self, driver: ModuleType, device: int) -> None:
        self._driver = driver
        super().__init__(pycuda_device_info(driver, device))
        self._context = driver.Device(device).retain_primary_context()
        self._context.push()
        self._stream = driver.Stream()
        self._allocations: dict[int, Any] = {}

    @property
    def handle(self) -> int:
        return int(self._stream.handle)

    def _allocate(self, nbytes: int) -> PinnedBuffer:
        try:
            host = self._driver.pagelocked_empty(nbytes, np.uint8)
            allocation = self._driver.mem_alloc(nbytes)
        except self._driver.Error as error:
            raise CudaError(f"CUDA allocation of {nbytes} bytes failed: {error}") from None
        self._allocations[int(allocation)] = allocation
        return PinnedBuffer(host=host, device=int(allocation), nbytes=nbytes)

    def _free(self, buffer: PinnedBuffer) -> None:
        self._allocations.pop(buffer.device).free()

    def copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self._driver.memcpy_htod_async(buffer.device, buffer.host[:nbytes], self._stream)

    def copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self._driver.memcpy_dtoh_async(buffer.host[:nbytes], buffer.device, self._stream)

    def synchronize(self) -> None:
        try:
            self._stream.synchronize()
        except self._driver.Error as error:
            raise CudaError(f"CUDA stream synchronize failed: {error}") from None

    def _close_stream(self) -> None:
        self._context.pop()
        self._context.detach()


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
    driver.init()
    return driver


def cuda_python_device_info(cudart: ModuleType, device: int) -> DeviceInfo:
    count = check_cuda_python(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
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
