"""Many clients against one ``poet-serve``, beside the same model run locally in one process.

For each ``--model``, ``poet-serve`` (started with ``--serve-python``, the server venv's interpreter) serves it on
loopback, and in turns for ``--rounds`` rounds (this machine's speed drifts over minutes) the script times:

* ``local b1``: one ``PoseEstimator`` in this process, one image per call;
* ``local bN``: the same, N images per call (N = the model's largest batch, the batch the server can make);
* ``served cK``: K client threads, each its own ``PoseEstimator("grpc://...")`` (a camera), one image per request.

Each variant runs for ``--seconds`` per round. It prints aggregate images/s and p50/p99 latency per call (a request
of one image for the clients, a batch for ``local bN``, letterbox and decoding included), medians over rounds.
Where the time goes comes from the server's own Prometheus counters over the served runs (per request: time
queued for a batch, in the model instance, all of it in the server) and from the client's own clock (its
``infer`` call less the server's time is transport: serialisation, gRPC, loopback). Targets (docs/serving.md):
with 8 clients the served aggregate reaches 0.9x ``local bN``; with 1 client the served p50 is at most
``local b1``'s p50 + 10% + 2 ms.

    python benchmarks/scripts/serving.py --serve-python build/serve-venv/bin/python \\
        --model ov-int8=r50.int8-openvino.onnx@openvino --model ort-fp32=r50.onnx@onnxruntime \\
        --images coco/val2017
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poet.images import list_images, read_image
from poet.pipeline import timed_predict
from poet.runtime import PoseEstimator

CLIENTS = (1, 4, 8)
# The server's cumulative counters (Triton's Prometheus metrics) read around the served runs.
COUNTERS = {
    "requests": "nv_inference_request_success",
    "executions": "nv_inference_exec_count",
    "request_us": "nv_inference_request_duration_us",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_us": "nv_inference_compute_infer_duration_us",
}


@dataclass
class Variant:
    """One way of running the model: its per-round images/s and every call's seconds."""

    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    infer_s: float = 0.0  # summed seconds of the served runs' infer calls, as the clients timed them

    def row(self, local_bn: float | None) -> str:
        rate = statistics.median(self.rates)
        p50, p99 = (1000 * float(np.percentile(self.latencies, q)) for q in (50, 99))
        ratio = f"{rate / local_bn:.2f}x" if local_bn else ""
        return f"| {self.name} | {rate:.2f} | {ratio} | {p50:.1f} | {p99:.1f} |"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_server(python: str, model: Path, backend: str, *options: str) -> tuple[subprocess.Popen[str], list[int]]:
    """``poet-serve`` on free loopback ports; returns once it printed its ready line."""
    ports = free_ports(3)
    command = [python, "-m", "poet.runtime.serve_cli", str(model), "--backend", backend, "--no-progress", *options]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("serving "):
        server.kill()
        raise SystemExit(f"poet-serve did not start: {line}{server.communicate()[0]}")
    print(line.strip(), flush=True)
    return server, ports


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for key, name in COUNTERS.items():
        match = re.search(rf'^{name}{{model="poet",version="1"}} (\S+)$', text, re.MULTILINE)
        values[key] = float(match.group(1)) if match else 0.0
    return values


def settled_metrics(port: int, requests: float) -> dict[str, float]:
    """The counters once they include ``requests`` requests (Triton publishes them every couple of seconds)."""
    deadline = time.monotonic() + 10
    values = metrics(port)
    while values["requests"] < requests and time.monotonic() < deadline:
        time.sleep(0.2)
        values = metrics(port)
    return values


def timed_calls(call: Callable[[], int], seconds: float) -> tuple[int, list[float]]:
    """Call ``call`` (which returns how many images it did) for ``seconds``: images done and each call's time."""
    images, latencies = 0, []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        images += call()
        latencies.append(time.perf_counter() - started)
    return images, latencies


def run_local(
    estimator: PoseEstimator, images: Sequence[np.ndarray], batch: int, seconds: float, variant: Variant
) -> None:
    chunk = list(images[:batch])
    started = time.perf_counter()
    done, latencies = timed_calls(lambda: len(estimator.predict_arrays(chunk)), seconds)
    variant.rates.append(done / (time.perf_counter() - started))
    variant.latencies += latencies


def run_clients(
    estimators: Sequence[PoseEstimator], images: Sequence[np.ndarray], seconds: float, port: int, variant: Variant
) -> None:
    """Every estimator in its own thread, one image per request, for ``seconds``; the server's counters around."""
    results: list[tuple[int, list[float]]] = []
    barrier = threading.Barrier(len(estimators) + 1)

    infer_s: list[float] = []

    def camera(index: int, estimator: PoseEstimator) -> None:
        image = images[index % len(images)]
        inferring = 0.0

        def predict() -> int:
            nonlocal inferring
            poses, times = timed_predict(estimator, [image])
            inferring += times.inference
            return len(poses)

        barrier.wait()
        results.append(timed_calls(predict, seconds))
        infer_s.append(inferring)

    threads = [threading.Thread(target=camera, args=item, daemon=True) for item in enumerate(estimators)]
    for thread in threads:
        thread.start()
    before = metrics(port)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    done = sum(images for images, _ in results)
    after = settled_metrics(port, before["requests"] + sum(len(latencies) for _, latencies in results))
    variant.rates.append(done / elapsed)
    for _, latencies in results:
        variant.latencies += latencies
    variant.infer_s += sum(infer_s)
    for key in COUNTERS:
        variant.counters[key] = variant.counters.get(key, 0.0) + after[key] - before[key]


def where_time_goes(variant: Variant) -> str:
    counted = variant.counters
    requests = counted.get("requests", 0.0)
    if not requests:
        return f"| {variant.name} | no requests counted |"
    per = {key: counted[key] / requests / 1000 for key in ("request_us", "queue_us", "compute_us")}
    infer_ms = 1000 * variant.infer_s / requests
    batch = requests / max(counted["executions"], 1)
    return (
        f"| {variant.name} | {batch:.2f} | {infer_ms:.1f} | {per['request_us']:.1f} | {per['queue_us']:.1f} "
        f"| {per['compute_us']:.1f} | {infer_ms - per['request_us']:.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=PATH[@BACKEND]", help="a model to serve; repeat"
    )
    parser.add_argument("--serve-python", required=True, help="the server venv's python (poet-edge[serve,openvino])")
    parser.add_argument("--images", type=Path, required=True, help="folder of photographs to send")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant and round")
    parser.add_argument("--max-queue-delay-us", type=int, default=0, help="poet-serve's (default: 0, its own)")
    parser.add_argument("--threads", type=int, help="inference threads, local and served (default: the backend's)")
    parser.add_argument("--instances", type=int, default=1, help="poet-serve --instances")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client counts to time")
    args = parser.parse_args(argv)
    images = [read_image(path) for path in list_images(args.images)[:16]]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    print(f"{len(images)} photographs from {args.images}; CPU: {cpu}; {args.rounds} rounds of {args.seconds:g} s each")
    for spec in args.model:
        name, _, rest = spec.partition("=")
        path_text, _, backend = rest.partition("@")
        backend = backend or "onnxruntime"
        path = Path(path_text)
        options = ["--max-queue-delay-us", str(args.max_queue_delay_us), "--instances", str(args.instances)]
        if args.threads:
            options += ["--threads", str(args.threads)]
        with ExitStack() as stack:
            server, ports = start_server(args.serve_python, path, backend, *options)
            stack.callback(server.wait, 120)
            stack.callback(server.terminate)
            local = PoseEstimator(path, backend, threads=args.threads)
            batch = local.backend.max_batch
            url = f"grpc://127.0.0.1:{ports[1]}/poet"
            clients = {count: [PoseEstimator(url) for _ in range(count)] for count in args.clients}
            variants = {"local b1": Variant("local b1"), f"local b{batch}": Variant(f"local b{batch}")}
            variants |= {f"served c{count}": Variant(f"served c{count}") for count in args.clients}
            for estimator in [local, *clients[max(args.clients)]]:  # warm up: first calls allocate
                estimator.predict_arrays(images[:1])
            local.predict_arrays(images[:batch])
            for _ in range(args.rounds):
                run_local(local, images, 1, args.seconds, variants["local b1"])
                run_local(local, images, batch, args.seconds, variants[f"local b{batch}"])
                for count in args.clients:
                    run_clients(clients[count], images, args.seconds, ports[2], variants[f"served c{count}"])
        reference = statistics.median(variants[f"local b{batch}"].rates)
        print(f"\n### {name}: {path.name} ({backend}), batch up to {batch}\n")
        print(f"| variant | images/s | of local b{batch} | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
        for variant in variants.values():
            print(variant.row(reference))
        print(
            "\n| served | images per execution | client's infer ms | in the server ms | queued ms "
            "| in the instance ms | transport ms |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        for count in args.clients:
            print(where_time_goes(variants[f"served c{count}"]))
        local_p50 = 1000 * float(np.percentile(variants["local b1"].latencies, 50))
        served_p50 = 1000 * float(np.percentile(variants["served c1"].latencies, 50))
        served8 = statistics.median(variants[f"served c{max(args.clients)}"].rates)
        print(
            f"\ntargets: {max(args.clients)} clients {served8 / reference:.2f}x local b{batch} (>= 0.9: "
            f"{'met' if served8 >= 0.9 * reference else 'NOT met'}); batch 1 served p50 {served_p50:.1f} ms vs "
            f"local {local_p50:.1f} ms + 10% + 2 ms = {1.1 * local_p50 + 2:.1f} "
            f"({'met' if served_p50 <= 1.1 * local_p50 + 2 else 'NOT met'})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
