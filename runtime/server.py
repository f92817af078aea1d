"""A real Triton Inference Server on this machine serving one exported model through poet-edge's own backends.

PyTriton (the ``serve`` extra) brings ``tritonserver`` with its Python backend and runs each model instance's
inference in this process: one poet-edge backend per instance (ONNX Runtime, OpenVINO or TensorRT, as
``poet-run`` would load it), fed by Triton's dynamic batcher. The served config carries the model info as the
parameter :data:`poet.modelinfo.METADATA_KEY`, so clients need only the URL. A fixed-batch model is served
with that batch as the largest request and padded here. PyTriton pins numpy<2, hence its own venv.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poet.errors import ServerError
from poet.extras import missing_extra
from poet.modelinfo import METADATA_KEY, ModelInfo
from poet.processing import fill_batch
from poet.runtime.backends import Backend, backend_name, load_backend
from poet.runtime.repository import DEFAULT_QUEUE_DELAY_US, model_tensors

log = logging.getLogger(__name__)

# Seconds tritonserver waits for requests in flight when it is told to stop.
EXIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens: loopback unless told otherwise, so nothing is exposed beyond the machine."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def ports(self) -> dict[str, int]:
        return {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"http://{host}:{self.http_port}, grpc://{host}:{self.grpc_port}, "
            f"metrics http://{host}:{self.metrics_port}/metrics"
        )


def check_ports_free(endpoints: Endpoints) -> None:
    """Fail before starting when a port is taken (or given twice), naming the option, rather than leave
    tritonserver to die with it."""
    seen: dict[int, str] = {}
    for option, port in endpoints.ports().items():
        if port in seen:
            raise ServerError(f"{option} {port} is also {seen[port]}: give each endpoint its own port")
        seen[port] = option
        family = socket.AF_INET6 if ":" in endpoints.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds
            try:
                probe.bind((endpoints.host, port))
            except OSError as error:
                reason = "it is in use" if error.errno == 98 else error.strerror or str(error)
                raise ServerError(f"{option} {port} on {endpoints.host}: {reason}; choose another port") from None


def python_library_first() -> None:
    """Put this interpreter's own libpython first on the library path tritonserver and its Python-backend stub
    inherit; otherwise the stub can load the system's libpython of the same version, which (pyenv's 3.11.7
    against Debian's) fails at import with ``'_thread.RLock' object has no attribute '_recursion_count'``."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    paths = [path for path in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if path and path != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def batch_function(
    backend: Backend, info: ModelInfo, served: Callable[[int], None] | None = None
) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """One instance's inference on the batch Triton made of its queued requests; a fixed-batch model gets its
    missing images as padding (black, unmasked, as :meth:`PoseEstimator.prepare` pads) and their rows dropped.
    ``served`` is told how many images each batch answered."""
    fixed = info.batch

    def infer(images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        count = len(images)
        if fixed is not None:
            images, mask = fill_batch(images, mask, fixed)
        outputs = backend.infer(images, mask)
        if served is not None:
            served(count)
        return {name: np.ascontiguousarray(outputs[name][:count]) for name in info.output_names}

    return infer


def _pytriton() -> Any:
    try:
        import pytriton.triton
    except ModuleNotFoundError as error:
        raise (missing_extra(error, "poet-serve", ["serve"]) or error) from None
    return pytriton


class PoseServer:
    """``tritonserver`` serving the model at ``model`` as ``name``, ``instances`` copies of its backend.

    ``start()`` returns once the server answers and the model is ready; ``stop()`` tells tritonserver to
    stop, which refuses new requests, finishes those in flight (for up to :data:`EXIT_TIMEOUT_S`), then
    unloads the model. ``log_file`` receives tritonserver's own log (by default a temporary file, quoted
    when the server fails to start). ``served`` is told how many images each batch answered (a progress bar).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        name: str = "poet",
        backend: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        device: int = 0,
        cuda_graph: bool = False,
        instances: int = 1,
        max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
        endpoints: Endpoints | None = None,
        log_file: Path | None = None,
        served: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.name = Path(model), name
        self.endpoints = endpoints or Endpoints()
        self.max_queue_delay_us = max_queue_delay_us
        self.log_file = log_file
        self.log_path: Path | None = log_file
        self.served = served
        self._pytriton = _pytriton()
        check_ports_free(self.endpoints)
        options = {"threads": threads, "device": device, "cuda_graph": cuda_graph, "precision": precision}
        self.backends = [load_backend(self.model, backend, **options) for _ in range(instances)]
        self.info = self.backends[0].info
        self.gpu = backend_name(self.model, backend) == "tensorrt"
        self.max_batch = self.info.batch or self.info.max_batch
        self._triton: Any = None
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        pytriton = self._pytriton
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        python_library_first()
        logging.getLogger("pytriton").setLevel(logging.WARNING)  # its INFO lines list endpoints poet-serve prints
        log_file = self.log_file
        if log_file is None:
            log_file = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="poet-serve-"))) / "triton.log"
        self.log_path = log_file
        host = self.endpoints.host
        config = pytriton.triton.TritonConfig(
            http_address=host,
            grpc_address=host,
            metrics_address=host,
            http_port=self.endpoints.http_port,
            grpc_port=self.endpoints.grpc_port,
            metrics_port=self.endpoints.metrics_port,
            exit_timeout_secs=EXIT_TIMEOUT_S,
            log_file=log_file,
            # GPU metrics only for a GPU model: elsewhere NVML is absent and tritonserver says so on stdout.
            allow_gpu_metrics=self.gpu,
        )
        inputs, outputs = model_tensors(self.info)
        triton = pytriton.triton.Triton(config=config)
        try:
            triton.bind(
                model_name=self.name,
                infer_func=[batch(batch_function(backend, self.info, self.served)) for backend in self.backends],
                inputs=[Tensor(name=spec.name, dtype=np.dtype(spec.dtype).type, shape=spec.dims) for spec in inputs],
                outputs=[Tensor(name=spec.name, dtype=np.dtype(spec.dtype).type, shape=spec.dims) for spec in outputs],
                config=ModelConfig(
                    max_batch_size=self.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=self.max_queue_delay_us),
                ),
                strict=True,
            )
            announce_model_info(triton, self.info)
            triton.run()
        except Exception as error:  # PyTriton raises its own errors, and TimeoutError while tritonserver is down
            tail = self.log_tail()
            triton.stop()
            raise ServerError(f"tritonserver did not start serving {self.model}: {error}{tail}") from None
        self._triton = triton

    def log_tail(self) -> str:
        """tritonserver's last error line, to quote; empty without one."""
        if self.log_path is None:
            return ""
        with contextlib.suppress(OSError):
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.startswith("E")]
            if lines:
                return f" (tritonserver: {lines[-1].strip()})"
        return ""

    def alive(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def stop(self) -> None:
        """Stop tritonserver after the requests in flight, then the instances; safe to call twice."""
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        self._stack.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[PoseServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def announce_model_info(triton: Any, info: ModelInfo) -> None:
    """Put the model info into the served config's ``parameters``, where clients read it.

    PyTriton 0.7's ``ModelConfig`` has no field for parameters; its models keep the Triton config they will
    write (``backend_parameters``, where PyTriton keeps its own workspace path) until the server loads them,
    which is where this adds the entry. The extra pins PyTriton below 0.8, and the tests read the parameter
    back from a running server.
    """
    for model in triton._model_manager.models:
        model._get_triton_model_config().backend_parameters[METADATA_KEY] = info.to_json()


def serve_until(server: PoseServer, stop: threading.Event, poll_s: float = 1.0) -> bool:
    """Serve until ``stop`` is set (a signal) or tritonserver dies; True when stopped as asked."""
    while not stop.wait(poll_s):
        if not server.alive():
            return False
    return True
