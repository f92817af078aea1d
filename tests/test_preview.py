"""``poet-run --preview``: a real poet-run serving a video to a real browser (headless Chromium) and to clients."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from poet.runtime.preview import MAX_VIEWERS, parse_address

GREY = 90
FRAME_SIZE = (320, 240)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """12,000 flat grey frames: poet-run is still running whatever the tests do meanwhile."""
    path = tmp_path_factory.mktemp("preview") / "grey.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, FRAME_SIZE)
    frame = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), GREY, np.uint8)
    for _ in range(12000):
        writer.write(frame)
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET (not of an MJPEG stream, which never ends)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


class PoetRun:
    """``poet-run VIDEO --preview 127.0.0.1:PORT`` in a child process, ready once it says where it serves."""

    def __init__(self, model: Path, video: Path, jsonl: Path, port: int) -> None:
        argv = [sys.executable, "-m", "poet.runtime.cli", str(video), "--model", str(model), "--score-threshold", "0"]
        argv += ["--preview", f"127.0.0.1:{port}", "--jsonl", str(jsonl), "--no-progress"]
        self.port = port
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert f"preview of 1 stream at http://127.0.0.1:{port}/" in line, line
        deadline = time.monotonic() + 60
        while json.loads(self.get("/streams/grey.json")[2]) is None:  # the model is loading
            assert time.monotonic() < deadline, "no frame after 60 s"
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, str, bytes]:
        return get(self.port, path)

    def record(self) -> dict:
        status, kind, body = self.get("/streams/grey.json")
        assert status == 200 and kind == "application/json"
        return json.loads(body)

    def interrupt(self) -> tuple[int, str, float]:
        started = time.perf_counter()
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=30)
        return self.process.returncode, out, time.perf_counter() - started


@pytest.fixture
def poet_run(runtime_models, long_video, tmp_path):
    run = PoetRun(runtime_models["float"], long_video, tmp_path / "poses.jsonl", free_port())
    yield run
    if run.process.poll() is None:
        run.process.kill()
        run.process.communicate()


def read_mjpeg_frame(port: int, name: str = "grey") -> np.ndarray:
    """The first JPEG part of the stream, decoded."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", f"/streams/{name}.mjpg")
        response = connection.getresponse()
        assert response.status == 200
        kind = response.getheader("Content-Type", "")
        assert kind.startswith("multipart/x-mixed-replace; boundary=")
        boundary = kind.split("boundary=", 1)[1]
        assert response.readline().strip() == f"--{boundary}".encode()
        headers = dict(line.decode().strip().split(": ", 1) for line in iter(response.readline, b"\r\n"))
        assert headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.read(int(headers["Content-Length"])), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        return image
    finally:
        connection.close()


def annotated(pixels: np.ndarray) -> tuple[int, int]:
    """How many pixels are the video's grey, and how many within its extent are the skeleton's strong colours."""
    grey = (np.abs(pixels.astype(int) - GREY) <= 8).all(axis=-1)
    rows, columns = np.nonzero(grey)
    if not rows.size:
        return 0, 0
    inside = pixels[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1].astype(int)
    coloured = (inside.max(axis=-1) - inside.min(axis=-1)) > 100  # orange, blue, green limbs; never grey
    return int(grey.sum()), int(coloured.sum())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's chromium package; .ci/run installs it)")
def test_a_browser_shows_the_annotated_frames_and_the_endpoints_answer(poet_run, tmp_path):
    record = poet_run.record()
    assert record["name"].startswith("grey_") and record["poses"] and set(record) == {"frame", "name", "poses"}
    frame = read_mjpeg_frame(poet_run.port)
    assert frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    grey, coloured = annotated(frame)
    assert grey > 0.5 * frame.shape[0] * frame.shape[1] and coloured > 100  # skeletons drawn on the grey frame
    status, kind, page = poet_run.get("/")
    assert status == 200 and kind.startswith("text/html") and b'src="/streams/grey.mjpg"' in page
    screenshot = tmp_path / "preview.png"
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=800,600"]
    browser += ["--virtual-time-budget=4000", f"--screenshot={screenshot}", f"http://127.0.0.1:{poet_run.port}/"]
    subprocess.run(browser, capture_output=True, timeout=120, check=True)
    picture = cv2.imread(str(screenshot))
    grey, coloured = annotated(picture)
    assert grey > 0.3 * FRAME_SIZE[0] * FRAME_SIZE[1], "the frame is not on the page"
    assert coloured > 100, "no skeleton drawn on the frame in the browser"
    if os.environ.get("POET_PREVIEW_SCREENSHOT"):  # where docs/runtime.md's picture comes from
        shutil.copy(screenshot, os.environ["POET_PREVIEW_SCREENSHOT"])
    for path in ("/streams/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/streams/grey.mjpg/..", "/README.md"):
        assert poet_run.get(path)[0] == 404, path
    for path in ("/streams/%2e%2e%2fgrey.json", "/streams/grey.png", "/streams/", "/streams/x/../grey.json"):
        assert poet_run.get(path)[0] == 404, path
    code, out, _ = poet_run.interrupt()
    assert code == 130 and "interrupted: outputs hold the frames processed so far" in out


def test_viewers_that_leave_stall_or_crowd_in_never_hold_inference(poet_run, tmp_path):
    # A viewer that disconnects in the middle of a frame.
    with socket.create_connection(("127.0.0.1", poet_run.port)) as viewer:
        viewer.sendall(b"GET /streams/grey.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        assert viewer.recv(300)
    time.sleep(1.0)  # its thread finds it gone at its next frame and frees its place
    # One that stops reading (its socket buffer fills), kept open while the others come.
    stalled = socket.create_connection(("127.0.0.1", poet_run.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /streams/grey.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    before = poet_run.record()["frame"]
    # 100 at once: at most MAX_VIEWERS are served, the rest told politely to come back.
    answers: list[bytes] = []
    sockets = [socket.create_connection(("127.0.0.1", poet_run.port)) for _ in range(100)]

    def ask(connection: socket.socket) -> None:
        connection.sendall(b"GET /streams/grey.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        answers.append(connection.recv(64))

    threads = [threading.Thread(target=ask, args=(connection,)) for connection in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    served = statuses.count(b"HTTP/1.0 200 OK")
    refused = statuses.count(b"HTTP/1.0 503 Service Unavailable")
    assert served + refused == 100 and MAX_VIEWERS - 1 <= served <= MAX_VIEWERS  # the stalled one holds a place
    time.sleep(1.0)
    after = poet_run.record()["frame"]
    assert after > before + 10, "inference stopped while viewers crowded in"
    # Ctrl-C with viewers connected: prompt, and the JSON lines so far intact.
    code, out, seconds = poet_run.interrupt()
    for connection in [*sockets, stalled]:
        connection.close()
    assert code == 130 and seconds < 10
    lines = (tmp_path / "poses.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))
    assert f"wrote {len(lines)} JSON lines to" in out


def test_a_port_in_use_is_one_error_line_before_any_work(runtime_models, long_video, tmp_path, capsys):
    from poet.runtime.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main([str(long_video), "--model", str(tmp_path / "missing.onnx"), "--preview", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2  # refused before the model (which does not exist) is looked at
    assert err == [f"error: --preview: cannot serve on 127.0.0.1:{port}: Address already in use"]


def test_preview_addresses():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("http", "70000", "host:", ":0"):
        with pytest.raises(ValueError, match="expected PORT or HOST:PORT"):
            parse_address(bad)


def test_several_tracked_streams_each_get_their_page_entry_and_records(runtime_models, long_video, tmp_path):
    from poet.runtime import PoseEstimator, PoseTracker
    from poet.runtime.cli import run_streams, stream_names
    from poet.runtime.preview import Preview
    from poet.runtime.sources import FrameSource

    second = tmp_path / "other.avi"
    shutil.copy(long_video, second)
    sources = [FrameSource(long_video), FrameSource(second)]
    names = stream_names(sources)
    preview = Preview(names, ("127.0.0.1", 0))
    estimator = PoseEstimator(runtime_models["float"], score_threshold=0.0)
    trackers = [PoseTracker(0.0, 0.0) for _ in sources]
    run = threading.Thread(
        target=run_streams,
        args=(estimator, sources),
        kwargs={"max_frames": 400, "progress": False, "trackers": trackers, "preview": preview},
    )
    run.start()
    try:
        page = get(preview.port, "/")[2]
        assert names == ["grey", "other"] and all(f'src="/streams/{name}.mjpg"'.encode() in page for name in names)
        deadline = time.monotonic() + 60
        records: dict[str, dict] = {}
        while len(records) < 2 and time.monotonic() < deadline:
            for name in names:
                record = json.loads(get(preview.port, f"/streams/{name}.json")[2])
                if record is not None:
                    records[name] = record
            time.sleep(0.1)
        assert all(record["poses"] and "track_id" in record["poses"][0] for record in records.values())
        assert all(read_mjpeg_frame(preview.port, name).shape == (240, 320, 3) for name in names)
    finally:
        run.join(timeout=120)
    assert not run.is_alive()
