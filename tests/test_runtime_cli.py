"""``poet-run`` and its frame sources on videos and folders made from COCO photographs."""

from __future__ import annotations

import json
import os
import threading
import time

import cv2
import numpy as np
import pytest

from poet.images import read_image
from poet.runtime import PoseEstimator
from poet.runtime import sources as sources_module
from poet.runtime.cli import main, run, run_streams
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
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for name in ("a.jpg", "b.png"):
        (unreadable / name).write_bytes(b"not an image")
    assert main([str(unreadable), "--model", model, "--jsonl", str(tmp_path / "out.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: none of the 2 images in folder {unreadable} could be read (first: {unreadable / 'a.jpg'})"]
    assert not (tmp_path / "out.jsonl").exists()


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


# ---------------------------------------------------------------- outputs: preflight, never an input, unique names


def _copy_photos(coco, folder, names):
    """Copy COCO photographs into ``folder`` under the given relative names (.png names are re-encoded)."""
    photos = sorted((coco / "val2017").glob("*.jpg"))
    for photo, name in zip(photos, names, strict=False):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".png":
            assert cv2.imwrite(str(target), read_image(photo))
        else:
            target.write_bytes(photo.read_bytes())
    return folder


def _snapshot(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes, to prove a refused run changed nothing."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _refused(args, capsys):
    """Run poet-run; it must exit 2 with exactly one ``error:`` line on stderr, which is returned."""
    assert main([*args, "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.fixture
def never_loaded(monkeypatch):
    """The model must not be loaded: the preflight fails first."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("poet.runtime.cli.PoseEstimator", fail)


def test_save_images_into_the_input_folder_is_refused_and_changes_nothing(
    runtime_models, coco, tmp_path, capsys, never_loaded
):
    photos = _copy_photos(coco, tmp_path / "photos", ["x.jpg", "y.png", "sub/x.jpg"])
    (tmp_path / "link").symlink_to(photos, target_is_directory=True)
    before = _snapshot(tmp_path)
    model = ["--model", str(runtime_models["uint8"])]
    cases = {
        str(photos): f"--save-images {photos} is the input folder {photos}",
        str(photos) + "/": "is the input folder",
        str(photos / "." / "sub" / ".."): "is the input folder",
        str(tmp_path / "link"): f"--save-images {tmp_path / 'link'} is the input folder",  # a symlink to it
        str(photos / "sub"): f"would overwrite the input {photos / 'sub' / 'x.jpg'}",  # x.jpg's copy: sub/x.jpg
    }
    for folder, message in cases.items():
        line = _refused([str(photos), *model, "--save-images", folder], capsys)
        assert message in line
    # Through the symlink as the input, the real folder as the output: the same folder.
    line = _refused([str(tmp_path / "link"), *model, "--save-images", str(photos)], capsys)
    assert "is the input folder" in line
    # A single image into its own folder.
    line = _refused([str(photos / "x.jpg"), *model, "--save-images", str(photos)], capsys)
    assert f"would overwrite the input {photos / 'x.jpg'}" in line
    assert _snapshot(tmp_path) == before


def test_an_output_folder_inside_the_input_folder_is_fine_until_it_holds_inputs(runtime_models, coco, tmp_path, capsys):
    photos = _copy_photos(coco, tmp_path / "photos", ["x.jpg", "y.jpg"])
    args = [str(photos), "--model", str(runtime_models["uint8"]), "--save-images", str(photos / "annotated")]
    assert main([*args, "--no-progress"]) == 0
    assert sorted(p.name for p in (photos / "annotated").iterdir()) == ["x.jpg", "y.jpg"]
    capsys.readouterr()
    # A rerun takes the annotated copies as inputs too, and would write x.jpg's copy over annotated/x.jpg.
    before = _snapshot(tmp_path)
    line = _refused(args, capsys)
    assert f"would overwrite the input {photos / 'annotated' / 'x.jpg'}" in line
    assert _snapshot(tmp_path) == before


def test_nested_tree_duplicate_names_and_non_ascii_names_get_distinct_outputs(runtime_models, coco, tmp_path, capsys):
    names = ["a/x.jpg", "b/x.jpg", "y.jpg", "y.png", "été/café.jpg", "人/写真 1.png", "a/deeper/x.jpg"]
    photos = _copy_photos(coco, tmp_path / "photos", names)
    (photos / ".hidden.jpg").write_bytes(b"not a photograph")  # hidden files (a killed run's temporaries) are skipped
    out, jsonl = tmp_path / "out", tmp_path / "p.jsonl"
    args = [str(photos), "--model", str(runtime_models["uint8"]), "--save-images", str(out), "--jsonl", str(jsonl)]
    assert main([*args, "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {len(names)} images to {out}/, {len(names)} JSON lines to {jsonl}" in stdout
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == sorted(names)
    for name in names:  # each output is its own input, annotated, in the input's format and size
        image = read_image(out / name)
        assert image.shape == read_image(photos / name).shape
        assert (out / name).read_bytes()[:3] == (b"\x89PN" if name.endswith(".png") else b"\xff\xd8\xff")
    assert len({(out / name).read_bytes() for name in names}) == len(names)
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert sorted(record["file"] for record in records) == sorted(names)
    assert {record["name"] for record in records} == {"x", "y", "café", "写真 1"}


def test_output_names_stay_distinct_ignoring_case():
    from poet.runtime.cli import unique_names

    assert unique_names(["a/x.jpg", "b/x.jpg", "y.jpg", "y.png"]) == ["a/x.jpg", "b/x.jpg", "y.jpg", "y.png"]
    # On a case-insensitive disk Y.jpg and y.jpg are one file; the later gets a number no input has.
    assert unique_names(["Y.jpg", "y-2.jpg", "y.jpg"]) == ["Y.jpg", "y-2.jpg", "y-3.jpg"]
    assert unique_names(["A/x.jpg", "a/X.JPG"]) == ["A/x.jpg", "a/X-2.JPG"]


def test_file_outputs_are_checked_before_the_model_and_any_frame(runtime_models, video, tmp_path, capsys, never_loaded):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("a file")
    copy = tmp_path / "people.avi"
    copy.write_bytes(video.read_bytes())
    before = _snapshot(tmp_path)
    model = ["--model", str(runtime_models["uint8"])]
    folder, text = tmp_path / "folder", tmp_path / "file.txt"
    cases = {
        ("--jsonl", str(folder)): f"--jsonl: cannot write {folder}: it is a folder",
        ("--jsonl", str(copy)): f"--jsonl {copy} is the input {copy}",
        ("--save-video", str(folder)): f"--save-video: cannot write {folder}: it is a folder",
        ("--save-video", str(copy)): f"--save-video {copy} is the input {copy}",
        ("--save-video", str(tmp_path / "v.txt")): "--save-video: cannot write a video to",
        ("--save-images", str(text)): f"--save-images {text} is a file; expected a folder",
        ("--jsonl", str(text / "p.jsonl")): f"--jsonl: cannot write {text / 'p.jsonl'}: {text} is a file, not a folder",
        ("--jsonl", str(tmp_path / "v.mp4"), "--save-video", str(tmp_path / "v.mp4")): "are the same file",
    }
    for options, message in cases.items():
        assert message in _refused([str(copy), *model, *options], capsys)
    assert _snapshot(tmp_path) == before


def test_jsonl_folder_is_refused_before_a_camera_delivers_a_frame(runtime_models, monkeypatch, tmp_path, capsys):
    camera = FakeCamera(frames=1000)
    reads = []
    read = camera.read
    camera.read = lambda: reads.append(1) or read()  # type: ignore[method-assign]
    monkeypatch.setattr(sources_module.cv2, "VideoCapture", lambda *args: camera)
    (tmp_path / "poses").mkdir()
    line = _refused(["0", "--model", str(runtime_models["uint8"]), "--jsonl", str(tmp_path / "poses")], capsys)
    assert "it is a folder" in line
    assert reads == [] and camera.released


def test_an_input_image_is_never_an_output(runtime_models, coco, tmp_path, capsys):
    photos = _copy_photos(coco, tmp_path / "photos", ["x.jpg", "a/y.jpg"])
    before = _snapshot(tmp_path)
    model = ["--model", str(runtime_models["uint8"])]
    for options in (["--jsonl", str(photos / "a" / "y.jpg")], ["--save-video", str(photos / "x.jpg")]):
        assert "is the input" in _refused([str(photos), *model, *options], capsys)
    # An output folder where a planned image file is a folder.
    (tmp_path / "out" / "x.jpg").mkdir(parents=True)
    line = _refused([str(photos), *model, "--save-images", str(tmp_path / "out")], capsys)
    assert f"cannot write {tmp_path / 'out' / 'x.jpg'}: it is a folder" in line
    assert _snapshot(tmp_path) == before


def test_unwritable_output_folder_fails_in_one_line_before_the_model(
    runtime_models, coco, tmp_path, capsys, never_loaded
):
    photos = _copy_photos(coco, tmp_path / "photos", ["x.jpg"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a 0o500 folder stays writable")
        model = ["--model", str(runtime_models["uint8"])]
        line = _refused([str(photos), *model, "--save-images", str(locked / "out")], capsys)
        assert f"cannot write {locked / 'out' / 'x.jpg'}: {locked} is not writable" in line
        line = _refused([str(photos), *model, "--jsonl", str(locked / "p.jsonl")], capsys)
        assert f"--jsonl: cannot write {locked / 'p.jsonl'}: {locked} is not writable" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_summary_counts_what_was_written(runtime_models, coco, tmp_path, capsys):
    photos = _copy_photos(coco, tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"])
    (photos / "broken.jpg").write_bytes(b"")
    out = tmp_path / "out"
    args = [str(photos), "--model", str(runtime_models["uint8"]), "--save-images", str(out), "--max-frames", "2"]
    assert main([*args, "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote 2 images to {out}/" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    assert main([str(photos), "--model", str(runtime_models["uint8"]), "--save-images", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "3 frames from" in stdout and "1 unreadable image skipped" in stdout
    assert f"wrote 3 images to {out}/" in stdout


def test_image_tree_listing_skips_hidden_names_and_ends_link_loops(tmp_path):
    from poet.runtime.sources import list_image_tree

    for name in ["b.jpg", "a/c.png", "a/.thumbs/t.jpg", ".d.jpg", "a/notes.txt", "a0.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = [str(path.relative_to(tmp_path)) for path in list_image_tree(tmp_path)]
    assert found == ["a/c.png", "a0.jpg", "b.jpg"]


# ---------------------------------------------------------------- several sources, tracking


def _write_video(path, photos, frames, size):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    for index in range(frames):
        writer.write(cv2.resize(read_image(photos[index % len(photos)]), size))
    writer.release()
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_several_videos_of_different_sizes_are_batched_into_per_stream_outputs(
    runtime_models, video, coco, tmp_path, capsys
):
    photos = sorted((coco / "val2017").glob("*.jpg"))
    tall = _write_video(tmp_path / "tall.avi", photos[::-1], 7, (200, 300))
    out = tmp_path / "out"
    args = [str(video), str(tall), "--model", str(runtime_models["float"]), "--score-threshold", "0"]
    args += ["--jsonl", str(out / "p.jsonl"), "--save-video", str(out / "v.avi"), "--save-images", str(out / "img")]
    assert main([*args, "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert f"{FRAMES} frames from {video} in" in stdout and "7 frames from " + str(tall) in stdout
    assert (
        f"wrote {FRAMES} images to {out / 'img' / 'people'}/, {FRAMES} JSON lines to {out / 'p.people.jsonl'}" in stdout
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "img",
        "p.people.jsonl",
        "p.tall.jsonl",
        "v.people.avi",
        "v.tall.avi",
    ]
    assert sorted(p.name for p in (out / "img" / "tall").iterdir()) == [f"tall_{i:06d}.jpg" for i in range(7)]
    assert _frames_of(out / "v.tall.avi")[0].shape == (300, 200, 3)
    # Each stream's poses are those of its frames alone, in its frame order.
    estimator = PoseEstimator(runtime_models["float"], score_threshold=0.0)
    for path, jsonl in ((video, out / "p.people.jsonl"), (tall, out / "p.tall.jsonl")):
        records = _records(jsonl)
        assert [r["frame"] for r in records] == list(range(len(_frames_of(path))))
        for record, poses in zip(records, estimator.predict(_frames_of(path)), strict=True):
            written = np.array([p["keypoints"] for p in record["poses"]])[..., :2]
            np.testing.assert_allclose(written, np.stack([p.keypoints[:, :2] for p in poses]), atol=0.05)


def test_streams_share_inferences_up_to_the_models_batch(runtime_models, video, coco, tmp_path):
    photos = sorted((coco / "val2017").glob("*.jpg"))
    short = _write_video(tmp_path / "short.avi", photos, 5, (160, 120))
    estimator = PoseEstimator(runtime_models["uint8"])  # a fixed batch of 2
    infer, batches = estimator.backend.infer, []

    def counted(images, mask):
        batches.append(int(mask.any(axis=(1, 2)).sum()))  # padding slots have no image
        return infer(images, mask)

    estimator.backend.infer = counted  # type: ignore[method-assign]
    sources = [FrameSource(video), FrameSource(short), FrameSource(tmp_path / "short.avi")]
    stats = run_streams(estimator, sources, jsonl=tmp_path / "p.jsonl", progress=False)
    assert [s.frames for s in stats] == [FRAMES, 5, 5]
    # Three streams on a batch of 2: two calls a step while all three go, then one with the video alone.
    assert batches == [2, 1] * 5 + [1] * (FRAMES - 5)
    assert [
        len((tmp_path / f"p.{name}.jsonl").read_text().splitlines()) for name in ("people", "short", "short-2")
    ] == [
        FRAMES,
        5,
        5,
    ]
    assert all(s.elapsed > 0 and s.failed is None for s in stats)


def test_a_source_given_twice_is_one_error_line_before_any_work(runtime_models, video, tmp_path, capsys, never_loaded):
    (tmp_path / "link.avi").symlink_to(video)
    model = ["--model", str(runtime_models["uint8"])]
    line = _refused([str(video), str(tmp_path / "link.avi"), *model, "--jsonl", str(tmp_path / "p.jsonl")], capsys)
    link = tmp_path / "link.avi"
    assert line == f"error: source {link} is given twice (as {video} and as {link}); give each source once"
    assert "is given twice; give each source once" in _refused(["0", "0", *model], capsys)
    assert list(tmp_path.iterdir()) == [tmp_path / "link.avi"]


def test_outputs_of_several_streams_are_checked_together_before_the_model(
    runtime_models, video, coco, tmp_path, capsys, never_loaded
):
    model = ["--model", str(runtime_models["uint8"])]
    # Streams "people" (the video) and "people-2" (the folder): the video's annotated frames would go to
    # people/people_000000.jpg, an input of the folder stream.
    people = _copy_photos(coco, tmp_path / "people", ["people_000000.jpg"])
    line = _refused([str(video), str(people), *model, "--save-images", str(tmp_path)], capsys)
    assert line == (
        f"error: --save-images {tmp_path / 'people'}: the annotated frames of {video} would overwrite the input "
        f"{people / 'people_000000.jpg'}; give another folder"
    )
    # The second stream's JSON lines would go where a folder is.
    (tmp_path / "p.people.jsonl").mkdir()
    line = _refused([str(people), str(video), *model, "--jsonl", str(tmp_path / "p.jsonl")], capsys)
    assert f"--jsonl: cannot write {tmp_path / 'p.people.jsonl'}: it is a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.people.jsonl", "people"]


class BrokenCamera(FakeCamera):
    """A camera whose frames turn bad (two channels) after ``frames`` good ones: its reader raises."""

    def read(self):
        if self.frames == 0:
            return True, np.zeros((48, 64, 2), dtype=np.uint8)
        return super().read()


def test_a_stream_that_dies_ends_alone_and_keeps_its_outputs(runtime_models, video, monkeypatch, tmp_path, capsys):
    capture = cv2.VideoCapture
    monkeypatch.setattr(
        sources_module.cv2,
        "VideoCapture",
        lambda target, *args: BrokenCamera(frames=4) if isinstance(target, int) else capture(target, *args),
    )
    truncated = tmp_path / "cut.avi"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    args = ["0", str(video), str(truncated), "--model", str(runtime_models["float"])]
    assert (
        main([*args, "--jsonl", str(tmp_path / "p.jsonl"), "--save-video", str(tmp_path / "v.avi"), "--no-progress"])
        == 1
    )
    stdout = capsys.readouterr().out
    lines = {
        name: len((tmp_path / f"p.{name}.jsonl").read_text().splitlines()) for name in ("camera0", "people", "cut")
    }
    assert lines["camera0"] == 4 and lines["people"] == FRAMES and 0 < lines["cut"] < FRAMES
    assert len(_frames_of(tmp_path / "v.camera0.avi")) == 4 and len(_frames_of(tmp_path / "v.people.avi")) == FRAMES
    assert "4 frames from 0 in" in stdout and "0 ended early: 0 frame 4 is an array of shape (48, 64, 2)" in stdout
    assert f"{truncated} ended early: video {truncated} ended after {lines['cut']} of its {FRAMES} frames" in stdout
    assert not [p for p in tmp_path.iterdir() if ".poet-tmp-" in p.name]


def test_one_source_that_fails_is_still_the_runs_error(runtime_models, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sources_module.cv2, "VideoCapture", lambda *args: BrokenCamera(frames=3))
    assert main(["0", "--model", str(runtime_models["uint8"]), "--jsonl", str(tmp_path / "p.jsonl")]) == 2
    assert "error: 0 frame 3 is an array of shape (48, 64, 2)" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_track_writes_identities_of_the_people_from_the_threshold_up(runtime_models, video, tmp_path):
    model = runtime_models["uint8"]
    low = PoseEstimator(model, score_threshold=0.1).predict(_frames_of(video))
    threshold = float(np.median([pose.score for poses in low for pose in poses]))
    args = [str(video), "--model", str(model), "--score-threshold", f"{threshold:.4f}", "--no-progress"]
    assert main([*args, "--track", "--no-smooth", "--jsonl", str(tmp_path / "raw.jsonl")]) == 0
    assert main([*args, "--track", "--jsonl", str(tmp_path / "smooth.jsonl")]) == 0
    raw, smooth = _records(tmp_path / "raw.jsonl"), _records(tmp_path / "smooth.jsonl")
    frames_of_id: dict[int, int] = {}
    for record, detected in zip(raw, low, strict=True):
        ids = [pose["track_id"] for pose in record["poses"]]
        assert all(isinstance(i, int) and i >= 1 for i in ids) and len(set(ids)) == len(ids)
        for pose in record["poses"]:
            # Poses below the threshold only keep a track going; the output is the same people as without --track.
            assert pose["score"] >= threshold - 1e-4
            # Unsmoothed, each tracked pose is one the model found.
            assert any(np.allclose(pose["keypoints"], p.to_dict()["keypoints"], atol=0.01) for p in detected)
            frames_of_id[pose["track_id"]] = frames_of_id.get(pose["track_id"], 0) + 1
    assert max(frames_of_id.values()) > 1  # an identity kept across frames
    assert [[p["track_id"] for p in r["poses"]] for r in smooth] == [[p["track_id"] for p in r["poses"]] for r in raw]
    assert smooth[-1]["poses"][0]["keypoints"] != raw[-1]["poses"][0]["keypoints"]


def test_no_smooth_needs_track(runtime_models, video, capsys):
    with pytest.raises(SystemExit):
        main([str(video), "--model", str(runtime_models["uint8"]), "--no-smooth"])
    assert "--no-smooth applies to --track" in capsys.readouterr().err


def test_tracked_people_are_drawn_in_their_identitys_colour():
    from poet.drawing import draw_poses, track_colour
    from poet.processing import Pose

    keypoints = np.column_stack([np.linspace(20, 80, 17), np.linspace(10, 90, 17), np.ones(17)])
    image = np.zeros((100, 100, 3), np.uint8)
    untracked = draw_poses(image, [Pose(keypoints, 0.9)])
    first, second = (draw_poses(image, [Pose(keypoints, 0.9, track_id=i)]) for i in (1, 2))
    assert not np.array_equal(untracked, first) and not np.array_equal(first, second)
    colours = {track_colour(i) for i in range(1, 9)}
    assert len(colours) == 8
    assert track_colour(1) in {tuple(int(c) for c in pixel) for pixel in first.reshape(-1, 3)}


def _small_video(path, frames=2, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * index, np.uint8))
    writer.release()
    return path.read_bytes()


def test_save_video_on_a_full_disk_fails_and_keeps_the_earlier_video(runtime_models, video, small_disk, capsys):
    disk = small_disk(96)
    earlier = _small_video(disk / "v.mp4")
    code = main([str(video), "--model", str(runtime_models["uint8"]), "--save-video", str(disk / "v.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"error: cannot write {disk / 'v.mp4'}: no space left on device")
    assert "the earlier file is kept" in err[-1]
    assert (disk / "v.mp4").read_bytes() == earlier
    assert sorted(p.name for p in disk.iterdir()) == ["v.mp4"]  # no temporary file left


_VIDEO_WRITER = cv2.VideoWriter


class _FrameDroppingWriter:
    """cv2.VideoWriter as it behaves on a full disk: frames after the first few are lost without a word."""

    fourcc = staticmethod(_VIDEO_WRITER.fourcc)

    def __init__(self, path, fourcc, fps, size):
        self.writer = _VIDEO_WRITER(path, fourcc, fps, size)
        self.frames = 0

    def isOpened(self):
        return self.writer.isOpened()

    def write(self, image):
        self.frames += 1
        if self.frames <= 3:
            self.writer.write(image)

    def release(self):
        self.writer.release()


def test_a_video_missing_frames_is_never_renamed_into_place(video, tmp_path, monkeypatch):
    from poet.errors import OutputError
    from poet.video import open_video

    earlier = _small_video(tmp_path / "v.avi")
    frames = _frames_of(video)
    with open_video(tmp_path / "ok.avi", 10.0) as written:  # the real writer: read back whole, renamed
        for frame in frames:
            written.write(frame)
    assert len(_frames_of(tmp_path / "ok.avi")) == FRAMES
    monkeypatch.setattr("poet.video.cv2.VideoWriter", _FrameDroppingWriter)
    short = f"cannot write {tmp_path / 'v.avi'}: the finished file holds 3 of the 12"
    with pytest.raises(OutputError, match=short), open_video(tmp_path / "v.avi", 10.0) as dropping:
        for frame in frames:
            dropping.write(frame)
    assert (tmp_path / "v.avi").read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.avi", "v.avi"]
    with open_video(tmp_path / "v.avi", 10.0):  # no frame: nothing replaced
        pass
    assert (tmp_path / "v.avi").read_bytes() == earlier
