"""Serving: the Triton configs poet-serve writes, a remote PoseEstimator against a real tritonserver on loopback,
and every fault as one line.

The tests that run a server start ``poet-serve`` (PyTriton's tritonserver) with the interpreter named by
POET_SERVE_PYTHON, a venv with ``poet-edge[serve,openvino]`` (PyTriton pins numpy<2, so it cannot share this
one); they are skipped without it. CI builds that venv (.ci/run). Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from poet.errors import ModelError, ServerError
from poet.modelinfo import ModelInfo
from poet.processing import PreprocessConfig
from poet.runtime import PoseEstimator
from poet.runtime.cli import main as run_main
from poet.runtime.compat import write_sidecar
from poet.runtime.repository import write_repository
from poet.runtime.serve_cli import main as serve_main
from poet.runtime.triton_backend import parse_model_url, served_model

SERVE_PYTHON = os.environ.get("POET_SERVE_PYTHON")
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120


def photographs(coco: Path) -> list[Path]:
    """The twelve COCO photographs the tests carry (val2017, then train2017)."""
    return sorted((coco / "val2017").glob("*.jpg")) + sorted((coco / "train2017").glob("*.jpg"))


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the kernel's choice), for servers and for URLs no server answers."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def assert_same_poses(expected, actual, tolerance: float = 1e-3) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=True):
        assert len(want) == len(got)
        for a, b in zip(want, got, strict=True):
            assert np.abs(a.keypoints - b.keypoints).max() <= tolerance
            assert abs(a.score - b.score) <= 1e-4


# ---------------------------------------------------------------- no server needed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("grpc://127.0.0.1:8001", r"names no model: expected grpc://HOST:PORT/NAME or http://HOST:PORT/NAME"),
        ("http://127.0.0.1:8000/", r"names no model"),
        ("rtsp://camera/poet", r"the scheme 'rtsp' is not served by Triton"),
        ("grpc://127.0.0.1:port/poet", r"has a bad port"),
        ("grpc://127.0.0.1:8001/a/b", r"'a/b' is not a Triton model name"),
    ],
)
def test_a_bad_model_url_is_refused_before_any_connection(url, message):
    with pytest.raises(ModelError, match=message):
        parse_model_url(url)


def test_a_url_takes_triton_default_ports():
    assert parse_model_url("grpc://gpu-server/poet").address == "gpu-server:8001"
    assert str(parse_model_url("http://[::1]/cam")) == "http://[::1]:8000/cam"


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_poet_run_against_no_server_is_one_line_naming_the_url(scheme, coco, tmp_path, capsys):
    (port,) = free_ports(1)
    url = f"{scheme}://127.0.0.1:{port}/poet"
    code = run_main([str(photographs(coco)[0]), "--model", url, "--jsonl", str(tmp_path / "p.jsonl"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: no Triton server answers at {scheme}://127.0.0.1:{port}")
    assert not (tmp_path / "p.jsonl").exists()


def test_local_options_are_refused_for_a_served_model(coco, capsys):
    code = run_main([str(photographs(coco)[0]), "--model", "grpc://127.0.0.1:1/poet", "--precision", "bf16"])
    assert code == 2
    assert "precision 'bf16' does not apply to the served model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:  # argparse's own usage error
        run_main([str(photographs(coco)[0]), "--model", "model.onnx", "--request-timeout", "1"])
    assert exit_code.value.code == 2
    assert "--request-timeout applies to a served --model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a request timeout applies to a served model"):
        PoseEstimator("model.onnx", timeout=1.0)


def _graph(path: Path) -> tuple[dict[str, tuple[str, list]], dict[str, list]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {"tensor(float)": "TYPE_FP32", "tensor(uint8)": "TYPE_UINT8", "tensor(bool)": "TYPE_BOOL"}
    inputs = {node.name: (types[node.type], node.shape) for node in session.get_inputs()}
    outputs = {node.name: (types[node.type], node.shape) for node in session.get_outputs()}
    return inputs, outputs


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """A config.pbtxt parsed against Triton's own schema: an unknown field or a bad value fails here."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize(
    ("layout", "backend", "batched"), [("float", "onnxruntime", True), ("uint8", "openvino", False)]
)
def test_the_written_repository_matches_triton_schema_and_the_graph(runtime_models, tmp_path, layout, backend, batched):
    model = runtime_models[layout]
    options = ["--backend", backend, "--instances", "2", "--max-queue-delay-us", "500", "--threads", "3"]
    code = serve_main([str(model), "--write-repository", str(tmp_path / "repo"), *options])
    assert code == 0
    config = read_config(tmp_path / "repo" / "poet" / "config.pbtxt")
    assert (tmp_path / "repo" / "poet" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert config.name == "poet" and config.backend == backend
    # Triton's OpenVINO backend looks for model.xml unless told; ONNX Runtime's finds model.onnx by itself.
    assert config.default_model_filename == ("model.onnx" if backend == "openvino" else "")
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    thread_key = {"onnxruntime": "intra_op_thread_count", "openvino": "INFERENCE_NUM_THREADS"}[backend]
    assert config.parameters[thread_key].string_value == "3"
    info = PoseEstimator(model).info
    assert ModelInfo.from_json(config.parameters["poet_edge"].string_value) == info
    inputs, outputs = _graph(model)
    if batched:  # dynamic batch: Triton batches up to the model's largest, the dimensions leave the batch out
        assert config.max_batch_size == info.max_batch == 4
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        strip = 1
    else:  # fixed batch: no batching by Triton, the batch is in the dimensions
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        strip = 0
    for tensors, graph in ((config.input, inputs), (config.output, outputs)):
        assert [tensor.name for tensor in tensors] == list(graph)
        for tensor in tensors:
            kind, shape = graph[tensor.name]
            assert model_config_pb2.DataType.Name(tensor.data_type) == kind
            assert list(tensor.dims) == shape[strip:], tensor.name
    # The client reads this config as it reads poet-serve's: the same model info, the batch the config allows.
    served = json_format.MessageToDict(config, preserving_proto_field_name=True)
    client_info, max_batch = served_model(parse_model_url("grpc://gpu:8001/poet"), served)
    assert max_batch == (4 if batched else 2)
    assert client_info == (info.replace(batch=None, max_batch=4) if batched else info)


def test_an_engine_repository_is_a_tensorrt_plan_on_the_gpu_from_its_sidecar(tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    with pytest.raises(ModelError, match="no sidecar model.engine.json"):
        write_repository(engine, tmp_path / "repo")
    info = ModelInfo(
        preprocess=PreprocessConfig(input_size=(96, 64)),
        num_queries=5,
        input_format="uint8-nhwc-bgr",
        batch=None,
        max_batch=8,
        precision="fp16",
        extra={"tensorrt": {"version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}},
    )
    write_sidecar(engine, info)
    assert (
        serve_main([str(engine), "--write-repository", str(tmp_path / "repo"), "--name", "cam", "--device", "1"]) == 0
    )
    assert "tritonserver --model-repository" in capsys.readouterr().out
    config = read_config(tmp_path / "repo" / "cam" / "config.pbtxt")
    assert (tmp_path / "repo" / "cam" / "1" / "model.plan").read_bytes() == b"serialized engine"
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert [(g.kind, list(g.gpus)) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, [1])
    ]
    assert [(t.name, list(t.dims)) for t in config.input] == [("images", [96, 64, 3]), ("mask", [96, 64])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("pred_logits", [5, 3]), ("pred_kpts", [5, 53])]
    assert ModelInfo.from_json(config.parameters["poet_edge"].string_value) == info


def test_a_repository_rewritten_for_another_format_keeps_no_stale_model(runtime_models, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, PoseEstimator(runtime_models["float"]).info)
    write_repository(runtime_models["float"], tmp_path / "repo")
    write_repository(engine, tmp_path / "repo")
    assert sorted(path.name for path in (tmp_path / "repo" / "poet" / "1").iterdir()) == ["model.plan"]
    assert not [path for path in (tmp_path / "repo").rglob("*") if ".poet-tmp-" in path.name]


BLOCKER = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tritonclient", "pytriton"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
from poet.console import launch
"""


@pytest.mark.parametrize(
    ("command", "argv", "extra"),
    [
        ("poet-run", ["photo.jpg", "--model", "grpc://127.0.0.1:8001/poet"], "client"),
        ("poet-serve", ["model.onnx"], "serve"),
    ],
)
def test_without_the_triton_packages_each_tool_names_its_extra(command, argv, extra, coco):
    argv = [str(photographs(coco)[0]) if arg == "photo.jpg" else arg for arg in argv]
    code = BLOCKER + f"raise SystemExit(launch({command!r}, {argv!r}))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"pip install 'poet-edge[{extra}]'" in lines[0], result.stderr


# ---------------------------------------------------------------- a real tritonserver on loopback


@dataclass
class Served:
    """A running poet-serve: its process, its URLs and what it printed."""

    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    metrics_port: int
    ready_line: str

    def url(self, scheme: str, name: str = "poet") -> str:
        return f"{scheme}://127.0.0.1:{self.http_port if scheme == 'http' else self.grpc_port}/{name}"

    def metric(self, name: str) -> float:
        """A counter of the served model from the server's own Prometheus metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        match = re.search(rf'^{name}{{model="poet",version="1"}} (\S+)$', text, re.MULTILINE)
        assert match, f"{name} not in the metrics"
        return float(match.group(1))

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the server and wait for it; its exit code and the rest of its output. SIGKILL goes to its
        whole session, as when its machine or container dies."""
        if self.process.poll() is None:
            if signum == signal.SIGKILL:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.send_signal(signum)
        try:
            out, err = self.process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            out, err = self.process.communicate()
        self.wait_closed()
        return self.process.returncode, out + err

    def wait_closed(self, timeout: float = 60) -> None:
        """Wait until nothing listens on the server's ports: a killed poet-serve's tritonserver finishes too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.grpc_port)) != 0:
                    return
            time.sleep(0.2)


def serve_python() -> str:
    if not SERVE_PYTHON:
        pytest.skip("needs the server venv: set POET_SERVE_PYTHON to a python with poet-edge[serve,openvino]")
    return SERVE_PYTHON


@contextlib.contextmanager
def poet_serve(model: Path, *options: str) -> Iterator[Served]:
    """``poet-serve MODEL`` on free loopback ports, until it prints its ready line; stopped (SIGTERM) after."""
    http_port, grpc_port, metrics_port = free_ports(3)
    ports = ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    command = [serve_python(), "-m", "poet.runtime.serve_cli", str(model), *ports, "--no-progress", *options]
    # A session of its own: poet-serve, its tritonserver and the Python-backend stub can be killed together.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None

    def read() -> None:  # until the ready line; communicate() reads the rest
        assert process.stdout is not None
        for line in iter(process.stdout.readline, ""):
            lines.put(line)
            if line.startswith("serving "):
                return
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT_S)
        while line and not line.startswith("serving "):
            line = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        line = ""
    served = Served(process, http_port, grpc_port, metrics_port, line)
    try:
        if not line:
            code, output = served.stop(signal.SIGKILL)
            pytest.fail(f"poet-serve did not become ready (exit {code}): {output[-3000:]}")
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def served_float(runtime_models) -> Iterator[Served]:
    """The float, decoded, dynamic-batch (up to 4) model served by ONNX Runtime."""
    with poet_serve(runtime_models["float"]) as served:
        yield served


def test_served_poses_match_local_ones_over_http_and_grpc(served_float, runtime_models, coco):
    assert "batch up to 4" in served_float.ready_line and "grpc://127.0.0.1:" in served_float.ready_line
    images = [cv2.imread(str(path)) for path in photographs(coco)]
    local = PoseEstimator(runtime_models["float"], score_threshold=0.0).predict_arrays(images)
    assert sum(map(len, local)) == 6 * len(images)  # every query compared, not only confident ones
    for scheme in ("http", "grpc"):
        remote = PoseEstimator(served_float.url(scheme), score_threshold=0.0)
        assert remote.info == PoseEstimator(runtime_models["float"]).info
        assert_same_poses(local, remote.predict_arrays(images))


def test_an_unknown_model_or_a_url_without_one_is_one_line(served_float, coco, capsys):
    photo = str(photographs(coco)[0])
    assert run_main([photo, "--model", served_float.url("grpc", "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the Triton server at grpc://127.0.0.1:{served_float.grpc_port} has no model 'nope'")
    assert "\n" not in err
    assert run_main([photo, "--model", f"http://127.0.0.1:{served_float.http_port}"]) == 2
    assert "names no model" in capsys.readouterr().err


def test_eight_concurrent_clients_are_batched_by_the_server(served_float, coco):
    image = cv2.imread(str(photographs(coco)[0]))
    clients, rounds = 8, 12
    estimators = [PoseEstimator(served_float.url("grpc")) for _ in range(clients)]
    before = served_float.metric("nv_inference_request_success"), served_float.metric("nv_inference_exec_count")
    barrier = threading.Barrier(clients)

    def camera(estimator: PoseEstimator) -> None:
        barrier.wait()
        for _ in range(rounds):
            estimator.predict(image)

    threads = [threading.Thread(target=camera, args=(estimator,)) for estimator in estimators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    deadline = time.monotonic() + 10  # Triton publishes its counters every couple of seconds
    while served_float.metric("nv_inference_request_success") - before[0] < clients * rounds:
        assert time.monotonic() < deadline, "the metrics never counted every request"
        time.sleep(0.2)
    requests = served_float.metric("nv_inference_request_success") - before[0]
    executions = served_float.metric("nv_inference_exec_count") - before[1]
    assert requests == clients * rounds
    assert executions < requests, f"{executions:g} executions for {requests:g} requests: no batching"


def test_poet_run_with_four_tracked_sources_matches_the_local_run(served_float, runtime_models, coco, tmp_path):
    photos = photographs(coco)
    sources = []
    for index in range(4):
        folder = tmp_path / f"cam{index}"
        folder.mkdir()
        for photo in photos[index * 3 : index * 3 + 3]:
            shutil.copy(photo, folder / photo.name)
        sources.append(str(folder))
    common = [*sources, "--track", "--score-threshold", "0.05", "--no-progress"]
    assert run_main([*common, "--model", str(runtime_models["float"]), "--jsonl", str(tmp_path / "local.jsonl")]) == 0
    assert run_main([*common, "--model", served_float.url("grpc"), "--jsonl", str(tmp_path / "served.jsonl")]) == 0
    for index in range(4):
        local = [json.loads(line) for line in (tmp_path / f"local.cam{index}.jsonl").read_text().splitlines()]
        served = [json.loads(line) for line in (tmp_path / f"served.cam{index}.jsonl").read_text().splitlines()]
        assert len(served) == len(local) == 3
        for want, got in zip(local, served, strict=True):
            assert [p["track_id"] for p in got["poses"]] == [p["track_id"] for p in want["poses"]]
            for a, b in zip(want["poses"], got["poses"], strict=True):
                assert np.abs(np.array(a["keypoints"]) - np.array(b["keypoints"])).max() <= 1e-3


def test_the_preview_shows_the_tracked_streams_of_a_served_model(served_float, coco, tmp_path):
    """poet-run --preview with a served --model: each stream's page entry, JSON record and MJPEG frames."""
    from poet.runtime import PoseTracker
    from poet.runtime.cli import run_streams, stream_names
    from poet.runtime.preview import Preview
    from poet.runtime.sources import FrameSource

    frames = [cv2.resize(cv2.imread(str(path)), (320, 240)) for path in photographs(coco)]
    videos = []
    for name in ("left", "right"):
        writer = cv2.VideoWriter(str(tmp_path / f"{name}.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (320, 240))
        for index in range(300):
            writer.write(frames[index % len(frames)])
        writer.release()
        videos.append(FrameSource(tmp_path / f"{name}.avi"))
    names = stream_names(videos)
    preview = Preview(names, ("127.0.0.1", 0))
    estimator = PoseEstimator(served_float.url("grpc"), score_threshold=0.0)
    options = {"progress": False, "trackers": [PoseTracker(0.0, 0.0) for _ in videos], "preview": preview}
    run = threading.Thread(target=run_streams, args=(estimator, videos), kwargs=options)
    run.start()
    try:
        records: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(records) < 2 and time.monotonic() < deadline:
            for name in names:
                body = urllib.request.urlopen(f"http://127.0.0.1:{preview.port}/streams/{name}.json", timeout=10).read()
                if json.loads(body) is not None:
                    records[name] = json.loads(body)
            time.sleep(0.05)
        assert sorted(records) == ["left", "right"]
        assert all(record["poses"] and "track_id" in record["poses"][0] for record in records.values())
        with urllib.request.urlopen(f"http://127.0.0.1:{preview.port}/streams/right.mjpg", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert stream.readline().startswith(b"--") and b"image/jpeg" in stream.readline()
    finally:
        run.join(timeout=120)
    assert not run.is_alive()


@pytest.fixture(scope="module")
def served_fixed_slow(runtime_models) -> Iterator[Served]:
    """The uint8, raw-output, fixed-batch-2 model, whose batcher waits 1.5 s for a request's partner."""
    with poet_serve(runtime_models["uint8"], "--max-queue-delay-us", "1500000") as served:
        yield served


def test_a_fixed_batch_model_is_padded_by_the_server(served_fixed_slow, runtime_models, coco):
    assert "batch up to 2" in served_fixed_slow.ready_line
    images = [cv2.imread(str(path)) for path in photographs(coco)[:3]]  # a batch of 2, then 1 padded to 2
    local = PoseEstimator(runtime_models["uint8"], score_threshold=0.0).predict_arrays(images)
    remote = PoseEstimator(served_fixed_slow.url("grpc"), score_threshold=0.0)
    assert (remote.info.batch, remote.backend.max_batch) == (None, 2)
    assert_same_poses(local, remote.predict_arrays(images))


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_request_slower_than_its_timeout_is_one_line(served_fixed_slow, coco, tmp_path, capsys, scheme):
    url = served_fixed_slow.url(scheme)
    estimator = PoseEstimator(url, timeout=0.3)
    with pytest.raises(ServerError, match=r"did not answer within 0.3 s \(inference\)"):
        estimator.predict(str(photographs(coco)[0]))  # alone in its batch: it waits 1.5 s for a second image
    time.sleep(1.6)  # over HTTP the abandoned request stays queued until its batch is due; it would pair with ours
    photo = str(photographs(coco)[0])
    code = run_main([photo, "--model", url, "--request-timeout", "0.3", "--jsonl", str(tmp_path / "p.jsonl")])
    assert code == 1
    assert "did not answer within 0.3 s" in capsys.readouterr().out
    assert (tmp_path / "p.jsonl").read_text() == ""  # kept, with the frames before the failure: none


def test_the_server_killed_during_poet_run_ends_the_stream_and_keeps_the_jsonl(runtime_models, coco, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (160, 120))
    frames = [cv2.resize(cv2.imread(str(path)), (160, 120)) for path in photographs(coco)]
    for index in range(3000):
        writer.write(frames[index % len(frames)])
    writer.release()
    with poet_serve(runtime_models["float"]) as served:
        command = [sys.executable, "-m", "poet.runtime.cli", str(video), "--model", served.url("grpc")]
        command += ["--jsonl", str(tmp_path / "poses.jsonl"), "--no-progress"]
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while served.metric("nv_inference_request_success") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        served.stop(signal.SIGKILL)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    ended = next(line for line in out.splitlines() if line.startswith(f"{video} ended early: "))
    assert f"grpc://127.0.0.1:{served.grpc_port}" in ended
    assert "Traceback" not in err
    records = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert 20 <= len(records) < 3000
    assert [record["frame"] for record in records] == list(range(len(records)))


def test_sigterm_answers_the_requests_in_flight_or_says_why(runtime_models, coco):
    image = cv2.imread(str(photographs(coco)[0]))
    outcomes: list[str] = []
    with poet_serve(runtime_models["float"]) as served:

        def camera() -> None:
            estimator = PoseEstimator(served.url("grpc"))
            for _ in range(2000):
                try:
                    estimator.predict(image)
                    outcomes.append("answered")
                except ServerError as error:  # anything else fails the test in this thread's traceback
                    outcomes.append(f"told: {error}")
                    return

        threads = [threading.Thread(target=camera) for _ in range(4)]
        for thread in threads:
            thread.start()
        while len(outcomes) < 40:
            time.sleep(0.01)
        served.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=120)
        code, output = served.stop()
    assert code == 0, output
    assert "stopped serving poet: the requests in flight were answered" in output
    told = [outcome for outcome in outcomes if outcome.startswith("told")]
    assert len(told) == 4 and all("127.0.0.1" in outcome for outcome in told), told
    assert len(outcomes) == outcomes.count("answered") + 4


def test_a_port_in_use_is_one_line_naming_the_option(runtime_models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [serve_python(), "-m", "poet.runtime.serve_cli", str(runtime_models["float"])]
        command += ["--grpc-port", str(port), "--http-port", str(free_ports(1)[0])]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --grpc-port {port} on 127.0.0.1: it is in use; choose another port"
    ]


def test_nvidia_tritonserver_lists_its_models_and_says_why_one_is_not_ready(runtime_models, tmp_path):
    """The repository in the bundled tritonserver, which has only the Python backend: the model cannot load,
    so the server is up with the model UNAVAILABLE, as in a container whose backend fails."""
    assert serve_main([str(runtime_models["float"]), "--write-repository", str(tmp_path / "repo")]) == 0
    locate = "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)"
    root = Path(subprocess.run([serve_python(), "-c", locate], capture_output=True, text=True).stdout.strip())
    libs = root.parent / "nvidia_pytriton.libs"
    http_port, grpc_port, metrics_port = free_ports(3)
    command = [str(root / "tritonserver" / "bin" / "tritonserver"), "--model-repository", str(tmp_path / "repo")]
    command += ["--backend-directory", str(root / "tritonserver" / "backends"), "--exit-on-error=false"]
    command += ["--exit-timeout-secs", "2"]
    for endpoint, port in (("http", http_port), ("grpc", grpc_port), ("metrics", metrics_port)):
        command += [f"--{endpoint}-address", "127.0.0.1", f"--{endpoint}-port", str(port)]
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=1)
                break
            time.sleep(0.2)
        with pytest.raises(ServerError, match=r"has no model 'nope'; it serves poet$"):
            PoseEstimator(f"grpc://127.0.0.1:{grpc_port}/nope")
        with pytest.raises(
            ServerError, match=r"model 'poet' .* is not ready \(its state is UNAVAILABLE: .*onnxruntime"
        ):
            PoseEstimator(f"http://127.0.0.1:{http_port}/poet")
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_stub_gets_this_interpreters_libpython_first(monkeypatch):
    """What poet-serve does before starting tritonserver, whose Python-backend stub inherits the path."""
    import sysconfig

    from poet.runtime.server import python_library_first

    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/other:{sysconfig.get_config_var('LIBDIR')}")
    python_library_first()
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), "/opt/other"]
