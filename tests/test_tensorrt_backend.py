"""The TensorRT backend: torch-free import, refusals before deserializing, and its batching, buffer and CUDA
graph logic run against a recording stand-in for TensorRT and a host-memory stand-in for the GPU.

Where cuda-python and a CUDA device exist, the real buffer, copy and graph code runs too; elsewhere that
test skips.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import subprocess
import sys
import textwrap
import threading
import types
from enum import IntEnum
from functools import partial

import numpy as np
import pytest

from poet.errors import ModelError
from poet.modelinfo import ModelInfo
from poet.processing import PreprocessConfig
from poet.runtime import cuda_memory, tensorrt_backend, tensorrt_log
from poet.runtime.compat import EngineCompatibilityError, TensorRTUnavailable, host_platform, write_sidecar
from poet.runtime.cuda_memory import CudaError, CudaStream, DeviceInfo, PinnedBuffer, device_info, open_stream
from poet.runtime.estimator import PoseEstimator
from poet.runtime.tensorrt_backend import TensorRTBackend

SIZE, QUERIES, MAX_BATCH = 32, 2, 2
SHAPES = {
    "images": (-1, 3, SIZE, SIZE),
    "mask": (-1, SIZE, SIZE),
    "pred_logits": (-1, QUERIES, 3),
    "pred_kpts": (-1, QUERIES, 53),
}


def reference(images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """What the stand-in engine computes, per image."""
    logits = images.mean(axis=(1, 2, 3))[:, None, None] + np.arange(QUERIES * 3).reshape(1, QUERIES, 3)
    kpts = np.broadcast_to(mask.mean(axis=(1, 2))[:, None, None], (len(mask), QUERIES, 53))
    return {"pred_logits": logits.astype(np.float32), "pred_kpts": kpts.astype(np.float32)}


def device_bytes(pointer: int, nbytes: int) -> np.ndarray:
    """``nbytes`` of stand-in device memory: every stand-in below allocates it as host arrays at real addresses."""
    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_ubyte)), shape=(nbytes,))


def release_host_memory(memory: dict[int, np.ndarray]) -> None:
    memory.clear()


class HostCuda(CudaStream):
    """Device memory in host arrays: the backend's copies and graph handling run unchanged."""

    supports_graphs = True

    def __init__(self, graphs_work: bool = True) -> None:
        super().__init__(DeviceInfo("Orin", "8.7"), 0)
        self.memory: dict[int, np.ndarray] = {}
        self.graphs_work = graphs_work
        self.allocations = self.launches = self.destroyed = self.captures = 0
        self.recording: list | None = None
        self._release_when_dropped(partial(release_host_memory, self.memory))

    def _activate(self):
        return contextlib.nullcontext()

    @property
    def handle(self) -> int:
        return 7

    def _allocate(self, nbytes: int) -> PinnedBuffer:
        device = np.zeros(nbytes, np.uint8)
        self.memory[device.ctypes.data] = device
        self.allocations += 1
        return PinnedBuffer(host=np.zeros(nbytes, np.uint8), device=device.ctypes.data, nbytes=nbytes)

    def _free(self, buffer: PinnedBuffer) -> None:
        del self.memory[buffer.device]

    def enqueue(self, work) -> None:
        """Run ``work`` now, or record it while a graph is being captured (so a graph holds only the work)."""
        if self.recording is None:
            work()
        else:
            self.recording.append(work)

    def _copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self.enqueue(partial(np.copyto, self.memory[buffer.device][:nbytes], buffer.host[:nbytes]))

    def _copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self.enqueue(partial(np.copyto, buffer.host[:nbytes], self.memory[buffer.device][:nbytes]))

    def _synchronize(self) -> None:
        pass

    def _capture_graph(self, enqueue):
        self.captures += 1
        self.recording = []
        try:
            queued = enqueue()
        finally:
            recorded, self.recording = self.recording, None
        return tuple(recorded) if queued and self.graphs_work else None

    def _launch_graph(self, graph) -> None:
        self.launches += 1
        for work in graph:
            work()

    def _destroy_graph(self, graph) -> None:
        self.destroyed += 1


class FakeTensorRT(types.ModuleType):
    """The runtime part of the tensorrt module, computing :func:`reference` on the stand-in device memory.

    ``device_ready`` says whether the calling thread has the engine's device current (as TensorRT needs);
    where it has not, execution fails with an error logged to the logger, as TensorRT's does.
    """

    class TensorIOMode(IntEnum):
        INPUT = 1
        OUTPUT = 2

    class DataType(IntEnum):
        FLOAT = 0
        BOOL = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    class Logger(ILogger):
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    def __init__(
        self,
        cuda_handle: int = 7,
        version: str = "10.3.0",
        *,
        fixed_batch: int | None = None,
        device_ready=lambda: True,
        dla_cores: int = 0,
        enqueue=lambda work: work(),
    ) -> None:
        super().__init__("tensorrt")
        self.__file__ = "fake/tensorrt/__init__.py"
        self.__version__ = version
        self.deserialized = self.executions = 0
        self.dla_cores_at_load: list[int] = []
        self.loggers: list = []
        self.contexts: list = []
        fake = self
        max_batch = fixed_batch or MAX_BATCH
        batch_dim = fixed_batch or -1

        class Context:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[int, ...]] = {}
                self.addresses: dict[str, int] = {}
                fake.contexts.append(self)

            def set_input_shape(self, name: str, shape) -> bool:
                if not (fixed_batch or 1) <= shape[0] <= max_batch:
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return (self.shapes["images"][0], *SHAPES[name][1:])

            def set_tensor_address(self, name: str, pointer: int) -> bool:
                self.addresses[name] = pointer
                return True

            def _tensor(self, name: str, dtype) -> np.ndarray:
                shape = self.shapes.get(name) or self.get_tensor_shape(name)
                size = int(np.prod(shape)) * np.dtype(dtype).itemsize
                return device_bytes(self.addresses[name], size).view(dtype).reshape(shape)

            def execute_async_v3(self, stream: int) -> bool:
                assert stream == cuda_handle
                if not device_ready():
                    fake.loggers[-1].log(1, "[executionContext.cpp::enqueueV3] invalid resource handle")
                    return False
                fake.executions += 1

                def compute() -> None:
                    outputs = reference(self._tensor("images", np.float32), self._tensor("mask", np.bool_))
                    for name, value in outputs.items():
                        self._tensor(name, np.float32)[...] = value

                enqueue(compute)
                return True

        class Engine:
            num_io_tensors = len(SHAPES)

            def get_tensor_name(self, index: int) -> str:
                return list(SHAPES)[index]

            def get_tensor_mode(self, name: str):
                return fake.TensorIOMode.INPUT if name in ("images", "mask") else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name: str):
                return fake.DataType.BOOL if name == "mask" else fake.DataType.FLOAT

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return (batch_dim, *SHAPES[name][1:])

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
                return [(batch, *SHAPES[name][1:]) for batch in (1, MAX_BATCH, MAX_BATCH)]

            def create_execution_context(self) -> Context:
                return Context()

        class Runtime:
            DLA_core = -1  # TensorRT's default: a DLA engine lands on core 0
            num_DLA_cores = dla_cores

            def __init__(self, logger) -> None:
                fake.loggers.append(logger)

            def deserialize_cuda_engine(self, data: bytes):
                fake.dla_cores_at_load.append(self.DLA_core)
                fake.deserialized += 1
                if data != b"engine":
                    fake.loggers[-1].log(1, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag)")
                    return None
                return Engine()

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype) -> type:
        return np.bool_ if dtype == FakeTensorRT.DataType.BOOL else np.float32


def sidecar_info(
    version: str = "10.3.0",
    capability: str = "8.7",
    decoded: bool = False,
    dla_core: int | None = None,
    *,
    batch: int | None = None,
    built_on: dict | None = None,
    dla: dict | None = None,
) -> ModelInfo:
    """A sidecar as poet-build-engine writes it, built on this machine unless ``built_on`` says otherwise."""
    return ModelInfo(
        preprocess=PreprocessConfig(input_size=(SIZE, SIZE)),
        num_queries=QUERIES,
        batch=batch,
        max_batch=batch or MAX_BATCH,
        precision="fp16",
        decoded=decoded,
        extra={
            "onnx": {"path": "model.fp16.onnx"},
            "tensorrt": {
                "version": version,
                "gpu_name": "Orin",
                "compute_capability": capability,
                "platform": built_on or host_platform().to_dict(),
                "build_options": {"dla_core": dla_core},
                **({"dla": dla} if dla else {}),
            },
        },
    )


@pytest.fixture
def engine_file(tmp_path):
    def make(info: ModelInfo | None = None, data: bytes = b"engine"):
        path = tmp_path / "model.engine"
        path.write_bytes(data)
        write_sidecar(path, info or sidecar_info())
        return path

    return make


@pytest.fixture(autouse=True)
def fresh_tensorrt_logger(monkeypatch):
    """Each test's stand-in tensorrt module gets its own process-wide logger, as one real module would."""
    monkeypatch.setattr(tensorrt_log, "_logger", None)


@pytest.fixture
def fakes(monkeypatch):
    def install(graphs_work: bool = True, **options) -> tuple[FakeTensorRT, HostCuda]:
        cuda = HostCuda(graphs_work)
        trt = FakeTensorRT(enqueue=cuda.enqueue, **options)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tensorrt_backend, "open_stream", lambda device: cuda)
        return trt, cuda

    return install


def batch(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 3, SIZE, SIZE)).astype(np.float32), rng.random((count, SIZE, SIZE)) > 0.5


def assert_outputs(outputs: dict[str, np.ndarray], images: np.ndarray, mask: np.ndarray) -> None:
    expected = reference(images, mask)
    assert set(outputs) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-6)


# --- logic against the stand-ins ----------------------------------------------------------------------------------


def test_batches_beyond_the_profile_run_in_chunks(fakes, engine_file):
    trt, _ = fakes()
    backend = TensorRTBackend(engine_file())
    assert backend.max_batch == MAX_BATCH and backend.input_names == ("images", "mask")
    images, mask = batch(5, seed=0)
    assert_outputs(backend.infer(images, mask), images, mask)
    assert trt.executions == 3  # 2 + 2 + 1


def test_buffers_are_allocated_for_the_largest_batch_and_reused(fakes, engine_file):
    _, cuda = fakes()
    backend = TensorRTBackend(engine_file())
    for count, seed in ((1, 1), (2, 2), (1, 3), (2, 4), (1, 5)):
        images, mask = batch(count, seed)
        assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.allocations == 8  # four tensors at batch 1, grown once to batch 2
    assert len(cuda.memory) == 4
    backend.close()
    assert cuda.closed and not cuda.memory


def test_cuda_graphs_one_per_batch_size_seen_for_a_2_2_1_pattern(fakes, engine_file):
    """5 images on a max-batch-2 engine run as 2, 2, 1: one graph each for batch 2 and batch 1, captured once."""
    trt, cuda = fakes()
    backend = TensorRTBackend(engine_file(), cuda_graph=True)
    for seed in range(3):
        images, mask = batch(5, seed)
        assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.captures == 2 and backend.graphs == 2 and cuda.destroyed == 0
    assert len(trt.contexts) == 2  # one execution context per batch size, bounded by the profile's max
    # Of the 9 chunks, the first of each size runs plainly (as TensorRT requires before capture) and is then
    # captured once; the 7 others replay their size's graph.
    assert trt.executions == 2 + 2 and cuda.launches == 7
    assert cuda.allocations == 4  # buffers sized for the profile's largest batch at once: no reallocation


def test_cuda_graphs_replay_across_alternating_batch_sizes(fakes, engine_file):
    _, cuda = fakes()
    backend = TensorRTBackend(engine_file(), cuda_graph=True)
    for count, seed in ((2, 0), (1, 1), (2, 2), (1, 3), (2, 4), (1, 5)):
        images, mask = batch(count, seed)
        assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.captures == 2 and cuda.launches == 4 and cuda.destroyed == 0
    backend.close()
    assert cuda.destroyed == 2 and cuda.closed


def test_dla_engine_is_loaded_onto_its_core(fakes, engine_file):
    trt, _ = fakes(dla_cores=2)
    backends = [TensorRTBackend(engine_file(sidecar_info(dla_core=1))), TensorRTBackend(engine_file(sidecar_info()))]
    assert trt.dla_cores_at_load == [1, -1] and len(backends) == 2


def test_dla_engine_on_a_device_without_dla_cores_is_refused_before_deserializing(fakes, engine_file):
    trt, cuda = fakes(dla_cores=0)  # an Orin Nano
    path = engine_file(sidecar_info(dla_core=0, batch=1))
    with pytest.raises(ModelError) as error:
        TensorRTBackend(path)
    assert str(error.value) == (
        f"engine {path} runs on DLA core 0, and this device has 0 DLA cores (an Orin Nano has none); rebuild it "
        f"for the GPU: poet-build-engine model.fp16.onnx --fp16 -o {path}"
    )
    assert trt.deserialized == 0 and cuda.closed


def test_poet_run_is_told_at_load_how_many_layers_run_on_dla(fakes, engine_file, caplog):
    fakes(dla_cores=2)
    placement = {"dla_layers": 0, "gpu_layers": 41, "warning": "NO layer runs on DLA core 1: ..."}
    with caplog.at_level(logging.INFO):
        backend = TensorRTBackend(engine_file(sidecar_info(dla_core=1, batch=1, dla=placement)))
    assert backend.dla_layers == 0
    assert "0 layers on DLA core 1, 41 on the GPU" in caplog.text
    assert "NO layer runs on DLA core 1" in caplog.text


@pytest.mark.parametrize("version", ["11.3.0", "10.13.0.35", "11.5.0"])  # none runs DLA on JetPack
def test_dla_engine_on_a_tensorrt_without_dla_is_refused(fakes, engine_file, version):
    trt, cuda = fakes(version=version, dla_cores=2)
    with pytest.raises(ModelError, match=rf"runs on DLA core 0, and TensorRT {version} has no DLA support"):
        TensorRTBackend(engine_file(sidecar_info(version=version, dla_core=0)))
    assert trt.deserialized == 0 and cuda.closed


def test_inputs_that_do_not_fit_the_engine_are_refused(fakes, engine_file):
    fakes()
    backend = TensorRTBackend(engine_file())
    images, mask = batch(1, seed=0)
    with pytest.raises(
        ValueError,
        match=r"images of shape \(1, 3, 32, 33\) does not fit engine .*model\.engine: expected \(B, 3, 32, 32\)",
    ):
        backend.infer(np.zeros((1, 3, SIZE, SIZE + 1), np.float32), mask)
    with pytest.raises(ValueError, match="mask is float64 but engine .* takes bool"):
        backend.infer(images, mask.astype(np.float64))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        backend.infer(images, np.concatenate([mask, mask]))


def test_engine_for_another_tensorrt_is_refused_before_deserializing(fakes, engine_file):
    trt, cuda = fakes()
    with pytest.raises(EngineCompatibilityError, match="built for TensorRT 10.13.0.35 but this machine has 10.3.0"):
        TensorRTBackend(engine_file(sidecar_info(version="10.13.0.35")))
    assert trt.deserialized == 0 and cuda.closed


def test_engine_without_the_promised_outputs_is_refused(fakes, engine_file):
    fakes()
    with pytest.raises(ModelError, match=r"lacks the outputs \['keypoints', 'scores'\] its sidecar promises"):
        TensorRTBackend(engine_file(sidecar_info(decoded=True)))


def test_undeserializable_engine_quotes_tensorrt_and_names_the_rebuild_command(fakes, engine_file):
    fakes()
    with pytest.raises(ModelError) as error:
        TensorRTBackend(engine_file(data=b"corrupt"))
    message = str(error.value)
    assert "could not deserialize" in message and "poet-build-engine model.fp16.onnx --fp16" in message
    assert "TensorRT said: IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag)" in message


def test_one_tensorrt_logger_for_the_process_forwarding_to_python_logging(fakes, engine_file, caplog):
    """TensorRT keeps the first logger it is given: every runtime gets the same one, and it is no stdout printer."""
    trt, _ = fakes()
    backends = [TensorRTBackend(engine_file()), TensorRTBackend(engine_file())]
    assert len(backends) == 2
    first, second = trt.loggers
    assert first is second and isinstance(first, trt.ILogger) and not isinstance(first, trt.Logger)
    with caplog.at_level(logging.WARNING, logger="poet.tensorrt"):
        first.log(2, "Using an engine plan file across different models of devices is not recommended")
    assert "TensorRT: Using an engine plan file across" in caplog.text


def test_execution_failure_quotes_tensorrt(fakes, engine_file):
    fakes(device_ready=lambda: False)
    backend = TensorRTBackend(engine_file())
    with pytest.raises(CudaError, match=r"failed to execute .*TensorRT said: .*invalid resource handle"):
        backend.infer(*batch(1, seed=0))


def test_fixed_batch_engine_pads_a_smaller_last_chunk(fakes, engine_file):
    trt, _ = fakes(fixed_batch=2)
    backend = TensorRTBackend(engine_file(sidecar_info(batch=2)))
    assert (backend.max_batch, backend.fixed_batch) == (2, 2)
    images, mask = batch(3, seed=0)
    assert_outputs(backend.infer(images, mask), images, mask)
    images, mask = batch(1, seed=1)
    assert_outputs(backend.infer(images, mask), images, mask)
    assert trt.executions == 3 and all(context.shapes["images"][0] == 2 for context in trt.contexts)


def test_dropped_backend_releases_its_buffers_and_stream(fakes, engine_file):
    _, cuda = fakes()
    backend = TensorRTBackend(engine_file(), cuda_graph=True)
    backend.infer(*batch(2, seed=0))
    backend.infer(*batch(2, seed=1))
    assert cuda.memory and backend.graphs == 1
    del backend
    gc.collect()
    assert cuda.closed and not cuda.memory and cuda.destroyed == 1


def test_close_is_idempotent_and_a_closed_backend_says_so(fakes, engine_file):
    _, cuda = fakes()
    with TensorRTBackend(engine_file()) as backend:
        backend.infer(*batch(1, seed=0))
    backend.close()
    cuda.close()
    assert cuda.closed and backend.closed and not cuda.memory
    with pytest.raises(ModelError, match=r"engine .*model\.engine was closed"):
        backend.infer(*batch(1, seed=0))


def other_platform() -> dict:
    """A platform this test machine is not: the GH200 (aarch64) beside an x86 H100, or the reverse."""
    here = host_platform()
    return {"machine": "x86_64" if here.machine == "aarch64" else "aarch64", "system": here.system, "l4t_release": None}


def test_engine_from_another_platform_is_refused_before_deserializing(fakes, engine_file):
    trt, cuda = fakes()
    built_on = other_platform()
    path = engine_file(sidecar_info(built_on=built_on))
    with pytest.raises(EngineCompatibilityError) as error:
        TensorRTBackend(path)
    message = str(error.value)
    here = host_platform()
    assert f"built for {here.system} {built_on['machine']} but this machine is {here.system} {here.machine}" in message
    assert message.endswith(f"poet-build-engine model.fp16.onnx --fp16 --max-batch 2 -o {path}")
    assert trt.deserialized == 0 and cuda.closed


def test_missing_engine_sidecar_or_tensorrt_are_clear_errors(tmp_path, engine_file, monkeypatch):
    with pytest.raises(ModelError, match="engine .*nothing.engine not found"):
        TensorRTBackend(tmp_path / "nothing.engine")
    (tmp_path / "bare.engine").write_bytes(b"engine")
    with pytest.raises(EngineCompatibilityError, match=r"bare\.engine has no sidecar bare\.engine\.json"):
        TensorRTBackend(tmp_path / "bare.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable, match=r'pip install "poet-edge\[tensorrt\]"'):
        TensorRTBackend(engine_file())


# --- the real modules ---------------------------------------------------------------------------------------------


def test_tensorrt_backend_imports_without_torch_or_onnx():
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "onnx"):
                    raise ImportError(name + " is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import poet.runtime.tensorrt_backend, poet.runtime.compat, poet.runtime.cuda_memory
        assert not any(name.split(".")[0] in ("torch", "onnx") for name in sys.modules), "heavy import"
        assert "poet.optimize" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def cuda_device() -> DeviceInfo | None:
    try:
        return device_info(0)
    except (CudaError, TensorRTUnavailable):
        return None


@pytest.mark.skipif(cuda_device() is None, reason="needs cuda-python or pycuda and a CUDA device")
def test_real_cuda_buffers_copies_and_graph():
    gpu = cuda_device()
    assert gpu is not None and gpu.name and gpu.compute_capability.replace(".", "").isdigit()
    cuda = open_stream(0)
    try:
        buffer = cuda.allocate(4096)
        pattern = np.arange(1024, dtype=np.float32)
        buffer.host_view((1024,), np.dtype(np.float32))[...] = pattern
        cuda.copy_to_device(buffer, 4096)
        buffer.host[:] = 0
        cuda.copy_to_host(buffer, 4096)
        cuda.synchronize()
        np.testing.assert_array_equal(buffer.host_view((1024,), np.dtype(np.float32)), pattern)
        if cuda.supports_graphs:
            other = cuda.allocate(4096)

            def enqueue() -> bool:
                cuda.copy_to_device(other, 4096)
                cuda.copy_to_host(other, 4096)
                return True

            graph = cuda.capture_graph(enqueue)
            assert graph is not None
            other.host_view((1024,), np.dtype(np.float32))[...] = pattern * 2
            cuda.launch_graph(graph)
            cuda.synchronize()
            np.testing.assert_array_equal(other.host_view((1024,), np.dtype(np.float32)), pattern * 2)
            cuda.destroy_graph(graph)
    finally:
        cuda.close()


def test_buffers_are_freed_in_any_order():
    cuda = HostCuda()
    buffers = [cuda.allocate(64) for _ in range(3)]
    cuda.free(buffers[2])
    cuda.free(buffers[0])
    assert list(cuda.memory) == [buffers[1].device]
    cuda.close()
    assert cuda.memory == {} and cuda.closed


class FakeCudart:
    """cuda-python's runtime as CudaPythonStream uses it, where it matters: the current device is per host thread
    (``cudaSetDevice`` "sets device as the current device for the calling host thread"), memory and streams
    belong to the device current when they were made, and a copy on another device's stream fails."""

    class cudaError_t(IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidResourceHandle = 400
        cudaErrorStreamCaptureUnsupported = 900
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureMode(IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1
        cudaStreamCaptureModeRelaxed = 2

    class cudaMemcpyKind(IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    cudaStreamNonBlocking = 1

    def __init__(self, capture_fails: bool = False, devices: int = 2) -> None:
        self.capture_fails = capture_fails
        self.devices = devices
        self.last_error = self.cudaError_t.cudaSuccess
        self.modes: list[int] = []
        self.capturing = False
        self.thread = threading.local()
        self.memory: dict[int, tuple[int, np.ndarray]] = {}  # pointer -> (device, bytes)
        self.streams: dict[int, int] = {}  # stream -> device
        self.lock = threading.Lock()

    @property
    def current_device(self) -> int:
        return getattr(self.thread, "device", 0)

    def ok(self, *values):
        return (self.cudaError_t.cudaSuccess, *values)

    def cudaGetErrorName(self, error):
        return self.ok(self.cudaError_t(error).name.encode())

    def cudaGetErrorString(self, error):
        return self.ok(b"invalid resource handle")

    def cudaGetDeviceCount(self):
        return self.ok(self.devices)

    def cudaGetDeviceProperties(self, device):
        return self.ok(types.SimpleNamespace(name=b"Orin", major=8, minor=7))

    def cudaGetDevice(self):
        return self.ok(self.current_device)

    def cudaSetDevice(self, device):
        self.thread.device = device
        return self.ok()

    def _allocate(self, nbytes):
        array = np.zeros(nbytes, np.uint8)
        with self.lock:
            self.memory[array.ctypes.data] = (self.current_device, array)
        return self.ok(array.ctypes.data)

    cudaMallocHost = cudaMalloc = _allocate

    def _free(self, pointer):
        with self.lock:
            del self.memory[pointer]
        return self.ok()

    cudaFreeHost = cudaFree = _free

    def cudaStreamCreateWithFlags(self, flags):
        stream = 77 + len(self.streams)
        self.streams[stream] = self.current_device
        return self.ok(stream)

    def cudaStreamDestroy(self, stream):
        del self.streams[stream]
        return self.ok()

    def enqueue(self, work) -> None:
        """Run ``work`` now, or record it while the calling thread captures a graph."""
        recorded = getattr(self.thread, "recorded", None)
        if recorded is None:
            work()
        else:
            recorded.append(work)

    def cudaMemcpyAsync(self, destination, source, nbytes, kind, stream):
        if self.streams[stream] != self.current_device:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        self.enqueue(partial(ctypes.memmove, destination, source, nbytes))
        return self.ok()

    def cudaStreamSynchronize(self, stream):
        return self.ok()

    def cudaStreamBeginCapture(self, stream, mode):
        self.modes.append(mode)
        self.capturing = True
        self.thread.recorded = []
        return self.ok()

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        recorded, self.thread.recorded = self.thread.recorded, None
        if self.capture_fails:  # e.g. a loop the 10.3 parser built for CumSum that cannot be captured
            self.last_error = self.cudaError_t.cudaErrorStreamCaptureInvalidated
            return (self.last_error, None)
        return self.ok(recorded)

    def cudaGraphInstantiate(self, graph, flags):
        return self.ok(tuple(graph))

    def cudaGraphDestroy(self, graph):
        return self.ok()

    def cudaGraphLaunch(self, graph, stream):
        if self.streams[stream] != self.current_device:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        for work in graph:
            work()
        return self.ok()

    def cudaGraphExecDestroy(self, graph):
        return self.ok()

    def cudaGetLastError(self):
        error, self.last_error = self.last_error, self.cudaError_t.cudaSuccess
        return (error,)


class FakePycuda(types.ModuleType):
    """pycuda.driver where it matters: the context stack is per thread (``Context.pop`` pops the calling
    thread's), and allocation, copies and stream calls need their context current on the calling thread."""

    class Error(Exception):
        pass

    def __init__(self, devices: int = 2) -> None:
        super().__init__("pycuda.driver")
        self.thread = threading.local()
        self.detached = 0
        self.live_allocations = 0
        fake = self

        class Context:
            def __init__(self, device: int) -> None:
                self.device = device

            def push(self) -> None:
                fake.stack().append(self)

            @staticmethod
            def pop() -> None:
                if not fake.stack():
                    raise fake.Error("context::pop failed: cannot pop non-current context")
                fake.stack().pop()

            def detach(self) -> None:
                fake.detached += 1

        class Device:
            def __init__(self, index: int) -> None:
                self.index = index

            @staticmethod
            def count() -> int:
                return devices

            def name(self) -> str:
                return "Orin"

            def compute_capability(self) -> tuple[int, int]:
                return 8, 7

            def retain_primary_context(self) -> Context:
                return Context(self.index)

        class Stream:
            def __init__(self) -> None:
                self.context = fake.require_context("Stream")
                self.handle = 77

            def synchronize(self) -> None:
                fake.require_context("cuStreamSynchronize", self.context)

        class Allocation:
            def __init__(self, nbytes: int) -> None:
                self.context = fake.require_context("cuMemAlloc")
                self.array = np.zeros(nbytes, np.uint8)
                fake.live_allocations += 1

            def __int__(self) -> int:
                return self.array.ctypes.data

            def free(self) -> None:
                fake.require_context("cuMemFree", self.context)
                fake.live_allocations -= 1

        class PagelockedArray(np.ndarray):
            def free(self) -> None:
                fake.live_allocations -= 1

        self.Context, self.Device, self.Stream, self.Allocation = Context, Device, Stream, Allocation
        self.PagelockedArray = PagelockedArray

    def stack(self) -> list:
        if not hasattr(self.thread, "stack"):
            self.thread.stack = []
        return self.thread.stack

    def current_device(self) -> int | None:
        return self.stack()[-1].device if self.stack() else None

    def require_context(self, call: str, context=None):
        current = self.stack()[-1] if self.stack() else None
        if current is None or (context is not None and current is not context):
            raise self.Error(f"{call} failed: invalid device context")
        return current

    def init(self) -> None:
        pass

    def pagelocked_empty(self, nbytes: int, dtype) -> np.ndarray:
        self.require_context("cuMemHostAlloc")
        self.live_allocations += 1
        return self.PagelockedArray((nbytes,), dtype).view(np.ndarray)  # its base has free(), as pycuda's has

    def mem_alloc(self, nbytes: int):
        return self.Allocation(nbytes)

    def memcpy_htod_async(self, destination: int, source: np.ndarray, stream) -> None:
        self.require_context("cuMemcpyHtoDAsync", stream.context)
        ctypes.memmove(destination, source.ctypes.data, source.nbytes)

    def memcpy_dtoh_async(self, destination: np.ndarray, source: int, stream) -> None:
        self.require_context("cuMemcpyDtoHAsync", stream.context)
        ctypes.memmove(destination.ctypes.data, source, destination.nbytes)


@pytest.fixture
def cuda_bindings(monkeypatch):
    """Install a stand-in for cuda-python or for pycuda (with cuda-python missing) behind the real CudaStream
    classes; TensorRT's stand-in executes only where the thread has device 1 current."""

    def install(bindings: str) -> tuple[FakeTensorRT, FakeCudart | FakePycuda]:
        if bindings == "cuda-python":
            cudart = FakeCudart()
            monkeypatch.setattr(cuda_memory, "cuda_python_runtime", lambda: cudart)
            trt = FakeTensorRT(cuda_handle=77, device_ready=lambda: cudart.current_device == 1, enqueue=cudart.enqueue)
            monkeypatch.setitem(sys.modules, "tensorrt", trt)
            return trt, cudart
        driver = FakePycuda()
        monkeypatch.setattr(cuda_memory, "cuda_python_runtime", lambda: None)
        monkeypatch.setattr(cuda_memory, "pycuda_driver", lambda: driver)
        trt = FakeTensorRT(cuda_handle=77, device_ready=lambda: driver.current_device() == 1)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt, driver

    return install


@pytest.mark.parametrize("bindings", ["cuda-python", "pycuda"])
def test_an_estimator_shared_by_8_threads_runs_on_device_1_from_each(cuda_bindings, engine_file, bindings):
    """The backend makes its device current on every thread that calls it: cuda-python's current device and
    pycuda's context stack are per thread, so doing it once on the constructing thread is not enough."""
    _, fake = cuda_bindings(bindings)
    estimator = PoseEstimator(engine_file(), device=1, cuda_graph=bindings == "cuda-python")
    frames = [np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), np.uint8) for seed in range(8)]
    alone = [estimator.predict_arrays([frame]) for frame in frames]
    outputs = [estimator.infer(estimator.prepare([frame])[0]) for frame in frames]
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(3):
                inputs, _ = estimator.prepare([frames[index]])
                results[index] = (estimator.predict_arrays([frames[index]]), estimator.infer(inputs))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index in range(8):
        poses, output = results[index]
        assert poses == alone[index]
        for name, value in outputs[index].items():
            np.testing.assert_array_equal(output[name], value)
    if bindings == "pycuda":
        assert fake.stack() == []  # nothing left pushed on the constructing thread either
    else:
        assert estimator.backend.graphs == 1 and fake.current_device == 0  # replayed from every thread
    estimator.backend.close()
    estimator.backend.close()
    if bindings == "cuda-python":
        assert fake.memory == {} and fake.streams == {}
    else:
        assert fake.live_allocations == 0 and fake.detached == 1


@pytest.mark.parametrize("bindings", ["cuda-python", "pycuda"])
def test_closing_from_another_thread_frees_in_the_streams_context(cuda_bindings, bindings):
    _, fake = cuda_bindings(bindings)
    stream = open_stream(1)
    stream.allocate(64)
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join()
    assert stream.closed
    if bindings == "cuda-python":
        assert fake.memory == {} and fake.streams == {}
    else:
        assert fake.live_allocations == 0 and fake.detached == 1 and fake.stack() == []


def test_a_dropped_cuda_python_stream_frees_its_memory():
    cudart = FakeCudart()
    stream = cuda_memory.CudaPythonStream(cudart, 1)
    stream.allocate(64)
    assert len(cudart.memory) == 2
    del stream
    gc.collect()
    assert cudart.memory == {} and cudart.streams == {} and cudart.current_device == 0


def test_cuda_python_without_a_driver_is_one_line():
    """cuda-python 12.6 raises where later versions return an error code, when libcuda.so.1 is missing."""

    class NoDriver(FakeCudart):
        def cudaGetDeviceCount(self):
            raise RuntimeError("Failed to dlopen libcuda.so.1")

    with pytest.raises(CudaError, match=r"^CUDA cudaGetDeviceCount failed: no CUDA driver here \(Failed to dlopen"):
        cuda_memory.cuda_python_device_info(NoDriver(), 0)


def test_cuda_python_capture_is_thread_local_and_a_failure_clears_the_error():
    from poet.runtime.cuda_memory import CudaPythonStream

    working = FakeCudart(capture_fails=False)
    assert CudaPythonStream(working, 0).capture_graph(lambda: True) == ()
    assert working.modes == [FakeCudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal]

    failing = FakeCudart(capture_fails=True)
    stream = CudaPythonStream(failing, 0)
    assert stream.capture_graph(lambda: True) is None
    assert failing.last_error == FakeCudart.cudaError_t.cudaSuccess and not failing.capturing
    assert CudaPythonStream(working, 0).capture_graph(lambda: False) is None  # TensorRT refused to enqueue

    def enqueue_raises() -> bool:
        raise CudaError("CUDA cudaMemcpyAsync failed")

    with pytest.raises(CudaError):
        stream.capture_graph(enqueue_raises)
    assert not failing.capturing and failing.last_error == FakeCudart.cudaError_t.cudaSuccess
