"""``poet-run`` and its frame sources on videos and folders made from COCO photographs."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from poet.images import read_image
from poet.runtime import PoseEstimator
from poet.runtime import sources as sources_module
from poet.runtime.cli import main, run
from poet.runtime.sources import FrameSource, SourceError

FRAMES = 12
FRAME_SIZE = (320, 240)


@pytest.fixture(scope="module")
def video(coco, tmp_path_factory):
    """A 12-frame MJPEG video of the COCO photographs (in turn); MJPEG so a truncated copy keeps its first frames."""
    path = tmp_path_factory.mktemp("video") / "people.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, FRAME_SIZE)
    photos = sorted((coco / "val2017").glob("*.jpg"))
    for index in range(FRAMES):
        writer.write(cv2.resize(read_image(photos[index % len(photos)]), FRAME_SIZE))
    writer.release()
    return path


def _frames_of(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_poet_run_on_a_video_writes_every_output(runtime_models, video, tmp_path, capsys):
    model = runtime_models["uint8"]
    args = [str(video), "--model", str(model), "--score-threshold", "0", "--jsonl", str(tmp_path / "poses.jsonl")]
    args += ["--save-video", str(tmp_path / "annotated.mp4"), "--save-images", str(tmp_path / "frames")]
    assert main(args) == 0
    assert f"{FRAMES} frames from {video}" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    # The JSON lines hold the poses PoseEstimator gives for the same decoded frames.
    expected = PoseEstimator(model, score_threshold=0.0).predict(_frames_of(video))
    for record, poses in zip(records, expected, strict=True):
        assert len(record["poses"]) == len(poses)
        written = np.array([p["keypoints"] for p in record["poses"]])
        np.testing.assert_allclose(written[..., :2], np.stack([p.keypoints[:, :2] for p in poses]), atol=0.01)
    annotated = _frames_of(tmp_path / "annotated.mp4")
    assert len(annotated) == FRAMES and annotated[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"people_{i:06d}.jpg" for i in range(FRAMES)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "frames", "poses.jsonl"]


def test_truncated_video_stops_cleanly_with_a_warning(runtime_models, video, tmp_path, caplog):
    truncated = tmp_path / "cut.avi"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    code = main([str(truncated), "--model", str(runtime_models["uint8"]), "--jsonl", str(tmp_path / "p.jsonl")])
    assert code == 0
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert 0 < len(lines) < FRAMES
    assert f"ended after {len(lines)} of its {FRAMES} frames" in caplog.text


def test_folder_skips_unreadable_images_and_bad_sources_fail_in_one_line(
    runtime_models, coco, tmp_path, capsys, caplog
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted((coco / "val2017").glob("*.jpg"))[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_bytes(b"")
    model = str(runtime_models["float"])
    assert main([str(folder), "--model", model, "--jsonl", str(tmp_path / "p.jsonl")]) == 0
    assert "skipping" in caplog.text and "broken.jpg is not a readable image" in caplog.text
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    failures = {
        str(folder / "broken.jpg"): "broken.jpg is not a readable image",
        str(tmp_path / "nothing.mp4"): "nothing.mp4 not found",
        str(tmp_path / "p.jsonl"): "cannot open",
    }
    for source, message in failures.items():
        assert main([source, "--model", model, "--jsonl", str(tmp_path / "out.jsonl")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()
    assert main([str(folder), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx not found" in capsys.readouterr().err


class FakeCamera:
    """A VideoCapture stand-in: ``frames`` frames, then a failed read or (``hang``) a read that never returns."""

    def __init__(self, frames: int, hang: threading.Event | None = None) -> None:
        self.frames, self.hang, self.released = frames, hang, False

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else -1.0

    def read(self):
        if self.frames == 0:
            if self.hang is not None:
                self.hang.wait()
            return False, None
        self.frames -= 1
        return True, np.full((48, 64, 3), 128, dtype=np.uint8)

    def release(self) -> None:
        self.released = True


def test_camera_failing_mid_stream_ends_the_run_with_outputs(runtime_models, monkeypatch, tmp_path, caplog):
    camera = FakeCamera(frames=5)
    monkeypatch.setattr(sources_module.cv2, "VideoCapture", lambda *args: camera)
    source = FrameSource("0")
    assert source.live and source.fps == 30.0 and source.total is None
    stats = run(PoseEstimator(runtime_models["uint8"]), source, jsonl=tmp_path / "p.jsonl", progress=False)
    assert stats.frames == 5 and stats.stopped_early == "camera 0 stopped delivering frames after 5 frames"
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 5
    assert camera.released and "stopped delivering frames" in caplog.text


def test_stalled_stream_times_out_instead_of_hanging(runtime_models, monkeypatch, tmp_path):
    hang = threading.Event()
    monkeypatch.setattr(sources_module.cv2, "VideoCapture", lambda *args: FakeCamera(frames=3, hang=hang))
    try:
        started = time.monotonic()
        source = FrameSource("rtsp://camera.local/live", read_timeout=0.5)
        stats = run(PoseEstimator(runtime_models["uint8"]), source, jsonl=tmp_path / "p.jsonl", progress=False)
        assert time.monotonic() - started < 10
        assert stats.frames == 3 and "no frame from rtsp://camera.local/live within 0.5 s" in str(stats.stopped_early)
        assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3
    finally:
        hang.set()


def test_ctrl_c_keeps_the_frames_processed_so_far(runtime_models, video, tmp_path):
    estimator = PoseEstimator(runtime_models["uint8"])
    infer = estimator.backend.infer
    calls = []

    def interrupted_on_the_fourth_frame(images, mask):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return infer(images, mask)

    estimator.backend.infer = interrupted_on_the_fourth_frame  # type: ignore[method-assign]
    stats = run(
        estimator, FrameSource(video), jsonl=tmp_path / "p.jsonl", save_video=tmp_path / "v.avi", progress=False
    )
    assert stats.interrupted and stats.frames == 3
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3
    assert len(_frames_of(tmp_path / "v.avi")) == 3


def test_empty_folder_and_unopenable_camera_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match="holds no images"):
        FrameSource(tmp_path)

    class Closed(FakeCamera):
        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(sources_module.cv2, "VideoCapture", lambda *args: Closed(frames=0))
    with pytest.raises(SourceError, match="cannot open camera 7"):
        FrameSource("7")
