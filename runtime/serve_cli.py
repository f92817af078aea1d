"""``poet-serve``: a Triton Inference Server for an exported model, or its model repository for NVIDIA's container."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from poet.console import add_progress, positive_int, run_cli
from poet.errors import PoetError, ServerError
from poet.runtime.cli import add_backend_options
from poet.runtime.repository import DEFAULT_QUEUE_DELAY_US, write_repository


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-serve",
        description="Serve an exported POET model (ONNX, OpenVINO IR, or a TensorRT engine with its sidecar) with "
        "a real Triton Inference Server on this machine, through poet-edge's own backends: HTTP, gRPC and "
        "Prometheus metrics, dynamic batching of every client's requests. Clients need only the URL: "
        "PoseEstimator('grpc://HOST:8001/NAME'), poet-run SOURCE --model grpc://HOST:8001/NAME. SIGTERM or "
        "Ctrl-C finishes the requests in flight, then exits 0. --write-repository writes the model repository "
        "for NVIDIA's Triton container instead.",
    )
    parser.add_argument("model", metavar="MODEL", help="poet-edge model: .onnx, .engine/.plan or OpenVINO's .xml")
    parser.add_argument("--name", default="poet", help="the model's name in its URLs (default: poet)")
    add_backend_options(parser)
    parser.add_argument(
        "--instances",
        type=positive_int,
        metavar="N",
        default=1,
        help="model instances, each its own copy of the backend, running batches side by side (default: 1)",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        metavar="US",
        default=DEFAULT_QUEUE_DELAY_US,
        help="microseconds a request may wait for others to join its batch, up to the model's batch (default: "
        f"{DEFAULT_QUEUE_DELAY_US}: a batch is what is queued when the model is free; under load, most clients)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)"
    )
    parser.add_argument("--http-port", type=positive_int, metavar="PORT", default=8000, help="HTTP (default: 8000)")
    parser.add_argument("--grpc-port", type=positive_int, metavar="PORT", default=8001, help="gRPC (default: 8001)")
    parser.add_argument(
        "--metrics-port", type=positive_int, metavar="PORT", default=8002, help="Prometheus metrics (default: 8002)"
    )
    parser.add_argument("--triton-log", type=Path, metavar="FILE", help="keep tritonserver's own log in FILE")
    parser.add_argument(
        "--write-repository",
        type=Path,
        metavar="DIR",
        help="write DIR/NAME/config.pbtxt and DIR/NAME/1/model.{onnx,xml,plan} for tritonserver --model-repository "
        "DIR (NVIDIA's container), then exit",
    )
    add_progress(parser)
    return parser


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_queue_delay_us < 0:
        raise PoetError(f"--max-queue-delay-us must be 0 or more microseconds, got {args.max_queue_delay_us}")
    if args.write_repository is not None:
        return _write(args)
    from poet.runtime.server import Endpoints, PoseServer, serve_until

    served = ServedCount(args.name, disable=args.no_progress)
    server = PoseServer(
        args.model,
        name=args.name,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        device=args.device,
        cuda_graph=args.cuda_graph,
        instances=args.instances,
        max_queue_delay_us=args.max_queue_delay_us,
        endpoints=Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port),
        log_file=args.triton_log,
        served=served,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with server.running():
        info = server.info
        instances = f"{args.instances} instance{'s' if args.instances > 1 else ''}"
        print(
            f"serving {args.name} ({args.model}: {info.precision}, batch up to {server.max_batch}, {instances}) at "
            f"{server.endpoints.describe()}; Ctrl-C or SIGTERM stops",
            flush=True,
        )
        served.show()
        stopped = serve_until(server, stop)
        served.close()
        tail = "" if stopped else server.log_tail()
    if not stopped:
        kept = f"; its log: {args.triton_log}" if args.triton_log else " (--triton-log FILE keeps its log)"
        raise ServerError(f"tritonserver serving {args.name} stopped unexpectedly{tail}{kept}")
    print(f"stopped serving {args.name}: the requests in flight were answered", flush=True)
    return 0


class ServedCount:
    """A running count of the images served and their rate, shown from the ready line on; updated from every
    instance's thread."""

    def __init__(self, name: str, disable: bool) -> None:
        self.name, self.disable = name, disable
        self.bar: tqdm[Any] | None = None
        self.lock = threading.Lock()

    def show(self) -> None:
        self.bar = tqdm(unit="image", desc=f"served by {self.name}", disable=self.disable, mininterval=1.0)

    def __call__(self, count: int) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(count)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()


def _write(args: argparse.Namespace) -> int:
    if args.precision is not None or args.cuda_graph:
        raise PoetError(
            "--precision and --cuda-graph apply to poet-serve's own server; Triton's backends in a repository run "
            "the precision the file holds"
        )
    config = write_repository(
        args.model,
        args.write_repository,
        name=args.name,
        backend=args.backend,
        instances=args.instances,
        max_queue_delay_us=args.max_queue_delay_us,
        device=args.device,
        threads=args.threads,
    )
    files = ", ".join(str(path) for path in sorted(config.parent.rglob("*")) if path.is_file())
    print(f"wrote {files}; serve them with tritonserver --model-repository {args.write_repository}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
