"""The TensorRT backend: torch-free import, refusals before deserializing, and its batching, buffer and CUDA
graph logic run against a recording stand-in for TensorRT and a host-memory stand-in for the GPU.

Where cuda-python and a CUDA device exist, the real buffer, copy and graph code runs too; elsewhere that
test skips.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import types
from enum import IntEnum

import numpy as np
import pytest

from poet.errors import ModelError
from poet.modelinfo import ModelInfo
from poet.processing import PreprocessConfig
from poet.runtime import tensorrt_backend
from poet.runtime.compat import EngineCompatibilityError, TensorRTUnavailable, write_sidecar
from poet.runtime.cuda_memory import CudaError, CudaStream, DeviceInfo, PinnedBuffer, device_info, open_stream
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


class HostCuda(CudaStream):
    """Device memory in host arrays: the backend's copies and graph handling run unchanged."""

    supports_graphs = True

    def __init__(self, graphs_work: bool = True) -> None:
        super().__init__(DeviceInfo("Orin", "8.7"))
        self.memory: dict[int, np.ndarray] = {}
        self.next_pointer = 1 << 16
        self.graphs_work = graphs_work
        self.allocations = self.launches = self.destroyed = 0
        self.closed = False

    @property
    def handle(self) -> int:
        return 7

    def _allocate(self, nbytes: int) -> PinnedBuffer:
        pointer, self.next_pointer = self.next_pointer, self.next_pointer + nbytes + 256
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        self.allocations += 1
        return PinnedBuffer(host=np.zeros(nbytes, np.uint8), device=pointer, nbytes=nbytes)

    def _free(self, buffer: PinnedBuffer) -> None:
        del self.memory[buffer.device]

    def copy_to_device(self, buffer: PinnedBuffer, nbytes: int) -> None:
        self.memory[buffer.device][:nbytes] = buffer.host[:nbytes]

    def copy_to_host(self, buffer: PinnedBuffer, nbytes: int) -> None:
        buffer.host[:nbytes] = self.memory[buffer.device][:nbytes]

    def synchronize(self) -> None:
        pass

    def _close_stream(self) -> None:
        self.closed = True

    def capture_graph(self, enqueue):
        return enqueue if self.graphs_work else None

    def launch_graph(self, graph) -> None:
        self.launches += 1
        assert graph()

    def destroy_graph(self, graph) -> None:
        self.destroyed += 1


class FakeTensorRT(types.ModuleType):
    """The runtime part of the tensorrt module, computing :func:`reference` on the stand-in device memory."""

    class TensorIOMode(IntEnum):
        INPUT = 1
        OUTPUT = 2

    class DataType(IntEnum):
        FLOAT = 0
        BOOL = 4

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    def __init__(self, cuda: HostCuda, version: str = "10.3.0") -> None:
        super().__init__("tensorrt")
        self.__file__ = "fake/tensorrt/__init__.py"
        self.__version__ = version
        self.deserialized = self.executions = 0
        self.dla_cores_at_load: list[int] = []
        fake = self

        class Context:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[int, ...]] = {}
                self.addresses: dict[str, int] = {}
                self.address_calls = 0

            def set_input_shape(self, name: str, shape) -> bool:
                if not 1 <= shape[0] <= MAX_BATCH:
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return (self.shapes["images"][0], *SHAPES[name][1:])

            def set_tensor_address(self, name: str, pointer: int) -> bool:
                self.addresses[name] = pointer
                self.address_calls += 1
                return True

            def _tensor(self, name: str, dtype) -> np.ndarray:
                shape = self.shapes.get(name) or self.get_tensor_shape(name)
                size = int(np.prod(shape)) * np.dtype(dtype).itemsize
                return cuda.memory[self.addresses[name]][:size].view(dtype).reshape(shape)

            def execute_async_v3(self, stream: int) -> bool:
                assert stream == cuda.handle
                fake.executions += 1
                outputs = reference(self._tensor("images", np.float32), self._tensor("mask", np.bool_))
                for name, value in outputs.items():
                    self._tensor(name, np.float32)[...] = value
                return True

        class Engine:
            num_io_tensors = len(SHAPES)
            context: Context

            def get_tensor_name(self, index: int) -> str:
                return list(SHAPES)[index]

            def get_tensor_mode(self, name: str):
                return fake.TensorIOMode.INPUT if name in ("images", "mask") else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name: str):
                return fake.DataType.BOOL if name == "mask" else fake.DataType.FLOAT

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return SHAPES[name]

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
                return [(batch, *SHAPES[name][1:]) for batch in (1, MAX_BATCH, MAX_BATCH)]

            def create_execution_context(self) -> Context:
                self.context = Context()
                return self.context

        class Runtime:
            DLA_core = -1  # TensorRT's default: a DLA engine lands on core 0

            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                fake.dla_cores_at_load.append(self.DLA_core)
                fake.deserialized += 1
                fake.engine = Engine() if data == b"engine" else None
                return fake.engine

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype) -> type:
        return np.bool_ if dtype == FakeTensorRT.DataType.BOOL else np.float32


def sidecar_info(
    version: str = "10.3.0", capability: str = "8.7", decoded: bool = False, dla_core: int | None = None
) -> ModelInfo:
    return ModelInfo(
        preprocess=PreprocessConfig(input_size=(SIZE, SIZE)),
        num_queries=QUERIES,
        batch=None,
        max_batch=MAX_BATCH,
        precision="fp16",
        decoded=decoded,
        extra={
            "onnx": {"path": "model.fp16.onnx"},
            "tensorrt": {
                "version": version,
                "gpu_name": "Orin",
                "compute_capability": capability,
                "build_options": {"dla_core": dla_core},
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


@pytest.fixture
def fakes(monkeypatch):
    def install(graphs_work: bool = True) -> tuple[FakeTensorRT, HostCuda]:
        cuda = HostCuda(graphs_work)
        trt = FakeTensorRT(cuda)
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


def test_cuda_graph_replays_a_repeated_shape_and_is_recaptured_on_a_new_one(fakes, engine_file):
    _, cuda = fakes()
    backend = TensorRTBackend(engine_file(), cuda_graph=True)
    for seed in range(3):
        images, mask = batch(2, seed)
        assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.launches == 2  # the first run at a shape is plain, as TensorRT requires before capture
    images, mask = batch(1, seed=9)
    assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.destroyed == 1 and cuda.launches == 2
    assert_outputs(backend.infer(images, mask), images, mask)
    assert cuda.launches == 3


def test_failed_graph_capture_warns_once_and_falls_back_to_plain_execution(fakes, engine_file, caplog):
    trt, cuda = fakes(graphs_work=False)
    backend = TensorRTBackend(engine_file(), cuda_graph=True)
    with caplog.at_level(logging.WARNING):
        for count, seed in ((2, 0), (2, 1), (1, 2), (1, 3), (2, 4)):
            images, mask = batch(count, seed)
            assert_outputs(backend.infer(images, mask), images, mask)
    assert caplog.text.count("CUDA graph capture failed") == 1
    assert trt.executions == 5 and cuda.launches == 0


def test_dla_engine_is_loaded_onto_its_core(fakes, engine_file):
    trt, _ = fakes()
    TensorRTBackend(engine_file(sidecar_info(dla_core=1)))
    TensorRTBackend(engine_file(sidecar_info()))
    assert trt.dla_cores_at_load == [1, -1]


def test_dla_engine_on_a_tensorrt_without_dla_is_refused(fakes, engine_file):
    trt, cuda = fakes()
    trt.__version__ = "11.3.0"
    with pytest.raises(ModelError, match=r"runs on DLA core 0, and TensorRT 11\.3\.0 has no DLA support"):
        TensorRTBackend(engine_file(sidecar_info(version="11.3.0", dla_core=0)))
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


def test_undeserializable_engine_names_the_rebuild_command(fakes, engine_file):
    fakes()
    with pytest.raises(ModelError, match=r"could not deserialize .*poet-build-engine model\.fp16\.onnx --fp16"):
        TensorRTBackend(engine_file(data=b"corrupt"))


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
    """The cuda-python runtime calls CudaPythonStream makes, with a capture that can be made to fail."""

    class cudaError_t(IntEnum):
        cudaSuccess = 0
        cudaErrorStreamCaptureUnsupported = 900
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureMode(IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1
        cudaStreamCaptureModeRelaxed = 2

    cudaStreamNonBlocking = 1

    def __init__(self, capture_fails: bool) -> None:
        self.capture_fails = capture_fails
        self.last_error = self.cudaError_t.cudaSuccess
        self.modes: list[int] = []
        self.capturing = False

    def cudaGetDeviceCount(self):
        return (self.cudaError_t.cudaSuccess, 1)

    def cudaGetDeviceProperties(self, device):
        return (self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Orin", major=8, minor=7))

    def cudaSetDevice(self, device):
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreateWithFlags(self, flags):
        return (self.cudaError_t.cudaSuccess, 77)

    def cudaStreamBeginCapture(self, stream, mode):
        self.modes.append(mode)
        self.capturing = True
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        if self.capture_fails:  # e.g. a loop the 10.3 parser built for CumSum that cannot be captured
            self.last_error = self.cudaError_t.cudaErrorStreamCaptureInvalidated
            return (self.last_error, None)
        return (self.cudaError_t.cudaSuccess, "graph")

    def cudaGraphInstantiate(self, graph, flags):
        return (self.cudaError_t.cudaSuccess, "graph-exec")

    def cudaGraphDestroy(self, graph):
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetLastError(self):
        error, self.last_error = self.last_error, self.cudaError_t.cudaSuccess
        return (error,)


def test_cuda_python_capture_is_thread_local_and_a_failure_clears_the_error():
    from poet.runtime.cuda_memory import CudaPythonStream

    working = FakeCudart(capture_fails=False)
    assert CudaPythonStream(working, 0).capture_graph(lambda: True) == "graph-exec"
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
