"""Bad inputs and faults on every command, as a careful tester would try them; prints one table row per case.

    python benchmarks/scripts/bad_inputs.py [--work DIR] [--only SUBSTRING]

Each case runs one installed command in a fresh folder. Every case must end as expected (exit 2 with exactly one
``error:`` line and no traceback for a refusal, exit 0 for input that is odd but valid), leave every input file
byte-identical, leave no temporary file behind, and write only what it should. Cases needing a read-only or a
full disk mount small tmpfs folders (root only; without root they are listed as skipped). Needs the dev install.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
COCO = REPO / "tests" / "data" / "coco"
VAL = "person_keypoints_val2017.json"


@dataclass
class Case:
    kind: str
    name: str
    argv: list[str]
    code: int = 2
    text: str = ""  # must appear in the output
    writes: list[str] = field(default_factory=list)  # must exist afterwards (relative to the case folder)
    writes_nothing: bool = False  # the case folder must stay empty
    keeps: list[str] = field(default_factory=list)  # files the setup made that must stay byte-identical
    setup: Callable[[Path], None] | None = None
    needs_root: bool = False
    env: dict[str, str] = field(default_factory=dict)
    interrupt_after: float | None = None  # send SIGINT after this many seconds


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def coco_variant(fixtures: Path, name: str, damage: Callable[[dict], None]) -> str:
    """A copy of the test COCO file with one record damaged, in ``fixtures/coco-bad``; returns its path."""
    data = json.loads((COCO / "annotations" / VAL).read_text())
    damage(data)
    path = fixtures / "coco-bad" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def build_fixtures(root: Path) -> None:
    """A tiny random POET (checkpoint and ONNX exports), photographs and damaged files of every kind."""
    import torch

    from poet.checkpoint import save_checkpoint
    from poet.images import read_image
    from poet.model import PoetConfig, build_model
    from poet.optimize.export import export_onnx
    from poet.processing import PreprocessConfig

    root.mkdir(parents=True)
    torch.manual_seed(0)
    config = PoetConfig(
        backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=64, num_queries=6
    )
    save_checkpoint(root / "tiny.pth", build_model(config, PreprocessConfig(input_size=(128, 128))))
    export_onnx(root / "tiny.pth", root / "tiny.onnx", uint8_input=True, progress=False)
    export_onnx(root / "tiny.pth", root / "tiny-dynamic.onnx", batch=None, max_batch=2, progress=False)
    shutil.copytree(COCO, root / "coco")
    photos = sorted((COCO / "val2017").glob("*.jpg"))
    (root / "photos").mkdir()
    for photo in photos[:3]:
        shutil.copy(photo, root / "photos" / photo.name)
    for sub in ("a", "b"):
        (root / "nested" / sub).mkdir(parents=True)
        shutil.copy(photos[0], root / "nested" / sub / "x.jpg")
    (root / "mixed").mkdir()
    shutil.copy(photos[1], root / "mixed" / "y.jpg")
    import cv2

    (root / "half-bad").mkdir()
    shutil.copy(photos[0], root / "half-bad" / "a.jpg")
    (root / "half-bad" / "b.jpg").write_text("not an image\n")
    shutil.copy(photos[1], root / "half-bad" / "c.jpg")
    (root / "all-bad").mkdir()
    for name in ("a.jpg", "b.png"):
        (root / "all-bad" / name).write_bytes(np.random.default_rng(3).bytes(500))
    shutil.copytree(COCO, root / "coco-one-bad")
    listed = json.loads((COCO / "annotations" / VAL).read_text())["images"]
    (root / "coco-one-bad" / "val2017" / min(listed, key=lambda e: e["id"])["file_name"]).write_bytes(b"cut")
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for index in range(24):
        writer.write(cv2.resize(read_image(photos[index % len(photos)]), (320, 240)))
    writer.release()

    shutil.copy(photos[2], root / "mixed" / "y.png")  # a JPEG named .png: decoders read the content
    shutil.copy(photos[0], root / "fötö ü.jpg")
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "empty.jpg").write_bytes(b"")
    (root / "bare.engine").write_bytes(b"not an engine")
    (root / "empty-folder").mkdir()
    cv2.imwrite(str(root / "tiny-1px.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(root / "huge.png"), np.full((6000, 9000, 3), 128, np.uint8))
    cv2.imwrite(str(root / "grey.png"), np.zeros((64, 64), np.uint8))
    (root / "random.pth").write_bytes(np.random.default_rng(1).bytes(100))
    (root / "truncated.pth").write_bytes((root / "tiny.pth").read_bytes()[:5000])
    (root / "corrupt.onnx").write_bytes(np.random.default_rng(2).bytes(300))
    import onnx

    model = onnx.load(root / "tiny.onnx")
    del model.metadata_props[:]
    onnx.save(model, root / "nometa.onnx")
    model = onnx.load(root / "tiny.onnx")
    entry = next(prop for prop in model.metadata_props if prop.key == "poet_edge")
    entry.value = entry.value[: len(entry.value) // 2]
    onnx.save(model, root / "badmeta.onnx")
    info = json.loads(next(p.value for p in onnx.load(root / "tiny.onnx").metadata_props if p.key == "poet_edge"))
    info["preprocess"]["input_size"] = "128x128"
    model = onnx.load(root / "tiny.onnx")
    next(p for p in model.metadata_props if p.key == "poet_edge").value = json.dumps(info)
    onnx.save(model, root / "metatype.onnx")
    info["preprocess"]["input_size"] = [96, 96]
    next(p for p in model.metadata_props if p.key == "poet_edge").value = json.dumps(info)
    onnx.save(model, root / "metashape.onnx")
    (root / "configs").mkdir()
    (root / "configs" / "string-lr.yaml").write_text("lr: fast\n")
    (root / "configs" / "typo.yaml").write_text("epoch: 3\n")
    (root / "configs" / "heads.yaml").write_text("hidden_dim: 32\nnheads: 3\n")
    (root / "configs" / "tag.yaml").write_text("lr: !!python/object/apply:os.system ['true']\n")
    (root / "configs" / "not-yaml.yaml").write_text("lr: [1, 2\n")
    fake_trt = root / "old-tensorrt" / "tensorrt"
    fake_trt.mkdir(parents=True)
    (fake_trt / "__init__.py").write_text('__version__ = "8.6.1"\n')
    bad = {
        "dup-image-id": lambda d: d["images"].append(dict(d["images"][0])),
        "dup-ann-id": lambda d: d["annotations"].append(dict(d["annotations"][0])),
        "unknown-image": lambda d: d["annotations"][0].update(image_id=987654321),
        "no-images": lambda d: d.update(images=[], annotations=[]),
        "null-keypoints": lambda d: d["annotations"][0].update(keypoints=None),
        "string-visibility": lambda d: d["annotations"][0]["keypoints"].__setitem__(2, "2"),
        "short-bbox": lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
        "50-keypoints": lambda d: d["annotations"][0].update(keypoints=d["annotations"][0]["keypoints"][:50]),
        "nan-keypoint": lambda d: d["annotations"][0]["keypoints"].__setitem__(0, float("nan")),
        "no-categories": lambda d: d.pop("categories"),
    }
    for name, damage in bad.items():
        coco_variant(root, name, damage)
    (root / "coco-bad" / "not-json.json").write_text('{"images": [')


def ro_mount(path: Path) -> Callable[[Path], None]:
    def setup(case: Path) -> None:
        (case / path).mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(case / path)], check=True)

    return setup


def full_mount(path: Path, size: str = "300k", earlier: str | None = None) -> Callable[[Path], None]:
    """A small tmpfs at ``path``; ``earlier``: a small video written there first, as a previous run's output."""

    def setup(case: Path) -> None:
        (case / path).mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(case / path)], check=True)
        if earlier is not None:
            import cv2

            writer = cv2.VideoWriter(str(case / path / earlier), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
            for _ in range(3):
                writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.release()

    return setup


TRACKER = """
import numpy as np
from poet.processing import Pose
from poet.runtime import PoseTracker
tracker, rng = PoseTracker(), np.random.default_rng(0)
figure = np.column_stack([rng.uniform(0, 80, (17, 2)), np.full(17, 0.9)])
for frame in range(40):
    keypoints = figure + [frame, 0, 0] + np.column_stack([rng.normal(0, 1, (17, 2)), np.zeros(17)])
    if frame == 10:
        keypoints[:4, :2] = np.nan
    (pose,) = tracker.update([Pose(keypoints, 0.9, np.array([0, 0, 80 + frame, 80.0]))])
    assert np.isfinite(pose.keypoints).all() and pose.track_id == 1, (frame, pose)
try:
    tracker.update([Pose(np.zeros((16, 3)), 0.9)])
except ValueError as error:
    print(f"NaN keypoints: 40 finite frames on one track; (16, 3) keypoints: {error}")
"""


THREADS = """
import concurrent.futures, pathlib
from poet.images import read_image
from poet.runtime import PoseEstimator
frames = [read_image(p) for p in sorted(pathlib.Path({photos!r}).iterdir())] * 8
estimator = PoseEstimator({model!r}, threads=1)
alone = [[pose.to_dict() for pose in estimator.predict(frame)] for frame in frames]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    shared = list(pool.map(lambda frame: [pose.to_dict() for pose in estimator.predict(frame)], frames))
assert shared == alone, "threads disagree"
print(f"threads agree on {{len(frames)}} frames")
"""


def killed_writer(name: str) -> Callable[[Path], None]:
    """The state a writer killed mid-write leaves: its temporary file beside the previous output."""

    def setup(case: Path) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        (case / name).write_bytes(b"previous output")
        (case / f".{name}.poet-tmp-{child.pid}-abcd1234.tmp.onnx").write_bytes(b"half")

    return setup


def damaged_cache(command: list[str]) -> Callable[[Path], None]:
    """A calibration cached by an earlier run, then cut short (a full disk, a copy interrupted)."""

    def setup(case: Path) -> None:
        subprocess.run([*command, "--cache-dir", "cache"], cwd=case, check=True, capture_output=True)
        (entry,) = (case / "cache").glob("int8-*.onnx")
        entry.write_bytes(entry.read_bytes()[:2000])

    return setup


def cases(fx: Path) -> list[Case]:
    """The cases; ``fx`` is the fixtures folder (every file in it is an input that must stay unchanged)."""
    onnx_model, ckpt, photo = str(fx / "tiny.onnx"), str(fx / "tiny.pth"), str(fx / "photos")
    one = str(sorted((fx / "photos").iterdir())[0])
    data = str(fx / "coco")
    run = ["poet-run", "--no-progress"]
    calibrate = ["poet-export", ckpt, "-o", "m.onnx", "--precision", "int8", "--target", "cpu"]
    calibrate += ["--calib-images", f"{fx}/photos", "--no-progress"]

    def bad(name: str) -> str:
        return str(fx / "coco-bad" / f"{name}.json")

    def ev(annotations: str) -> list[str]:
        return ["poet-eval", ckpt, "--annotations", annotations, "--images", f"{data}/val2017", "--no-progress"]

    return [
        # --- missing, corrupt and wrong-kind inputs
        Case("input", "poet-run: missing image", [*run, str(fx / "nope.jpg"), "--model", onnx_model]),
        Case("input", "poet-run: corrupt image", [*run, str(fx / "corrupt.jpg"), "--model", onnx_model]),
        Case("input", "poet-run: empty (0-byte) image", [*run, str(fx / "empty.jpg"), "--model", onnx_model]),
        Case("input", "poet-run: empty folder", [*run, str(fx / "empty-folder"), "--model", onnx_model]),
        Case("input", "poet-run: missing model", [*run, one, "--model", str(fx / "nope.onnx")]),
        Case("input", "poet-run: corrupt ONNX", [*run, one, "--model", str(fx / "corrupt.onnx")]),
        Case("input", "poet-run: checkpoint given as model", [*run, one, "--model", ckpt]),
        Case("input", "poet-run: ONNX without poet-edge metadata", [*run, one, "--model", str(fx / "nometa.onnx")]),
        Case("input", "poet-run: truncated metadata JSON", [*run, one, "--model", str(fx / "badmeta.onnx")]),
        Case("input", "poet-run: metadata input_size a string", [*run, one, "--model", str(fx / "metatype.onnx")]),
        Case("input", "poet-run: metadata disagrees with graph", [*run, one, "--model", str(fx / "metashape.onnx")]),
        Case("input", "poet-run: TensorRT engine without sidecar", [*run, one, "--model", str(fx / "bare.engine")]),
        Case("input", "poet-run: the same image twice", [*run, one, one, "--model", onnx_model], text="given twice"),
        Case(
            "input",
            "poet-run: --precision with ONNX Runtime",
            [*run, one, "--model", onnx_model, "--backend", "onnxruntime", "--precision", "bf16"],
            text="chooses OpenVINO's float precision",
        ),
        Case(
            "input",
            "poet-run: corrupt ONNX in OpenVINO",
            [*run, one, "--model", str(fx / "corrupt.onnx"), "--backend", "openvino"],
            text="not a model OpenVINO can read",
        ),
        Case("input", "poet-predict: ONNX given as checkpoint", ["poet-predict", one, "--checkpoint", onnx_model]),
        Case(
            "input", "poet-predict: 100 random bytes as .pth", ["poet-predict", one, "--checkpoint", f"{fx}/random.pth"]
        ),
        Case(
            "input", "poet-predict: truncated checkpoint", ["poet-predict", one, "--checkpoint", f"{fx}/truncated.pth"]
        ),
        Case("input", "poet-predict: corrupt image", ["poet-predict", f"{fx}/corrupt.jpg", "--checkpoint", ckpt]),
        Case(
            "input",
            "poet-predict: a folder with a file that is not an image",
            ["poet-predict", f"{fx}/half-bad", "--checkpoint", ckpt, "-o", "out", "--no-progress"],
            code=0,
            text="1 unreadable image skipped",
            writes=["out/a_poses.png", "out/c_poses.png", "out/poses.json"],
        ),
        Case(
            "input",
            "poet-predict: a folder of unreadable files",
            ["poet-predict", f"{fx}/all-bad", "--checkpoint", ckpt, "-o", "out", "--no-progress"],
            text="none of the 2 images",
            writes_nothing=True,
        ),
        Case(
            "input",
            "poet-run: a folder of unreadable files",
            [*run, f"{fx}/all-bad", "--model", onnx_model, "--jsonl", "p.jsonl"],
            text="none of the 2 images",
            writes_nothing=True,
        ),
        Case(
            "input",
            "poet-eval: an unreadable image in the image folder",
            [*ev(f"{data}/annotations/{VAL}")[:-2], f"{fx}/coco-one-bad/val2017", "--no-progress"],
            code=0,
            text="could not be read and were skipped",
        ),
        Case(
            "input",
            "PoseTracker: NaN keypoints, then (16, 3) keypoints",
            [sys.executable, "-c", TRACKER],
            code=0,
            text="pose 0: keypoints must have shape (17, 3)",
        ),
        Case("input", "poet-eval: missing checkpoint", ["poet-eval", f"{fx}/nope.pth", "--data", data]),
        Case("input", "poet-eval: missing data folder", ["poet-eval", ckpt, "--data", f"{fx}/nope"]),
        Case("input", "poet-export: missing checkpoint", ["poet-export", f"{fx}/nope.pth", "-o", "m.onnx"]),
        Case("input", "poet-export: opset too old", ["poet-export", ckpt, "-o", "m.onnx", "--opset", "12"]),
        Case(
            "input",
            "poet-export: INT8 on an empty calibration folder",
            ["poet-export", ckpt, "-o", "m.onnx", "--precision", "int8", "--calib-images", f"{fx}/empty-folder"],
            writes_nothing=True,
        ),
        Case(
            "input",
            "poet-bench: unknown variant",
            ["poet-bench", "--checkpoint", ckpt, "--data", data, "--variants", "x"],
        ),
        Case("input", "poet-train: missing config", ["poet-train", "--config", f"{fx}/nope.yaml", "--data", data]),
        Case(
            "input", "poet-train: missing data", ["poet-train", "--config", "synthetic-small", "--data", f"{fx}/nope"]
        ),
        # --- config files
        Case("config", "poet-train: lr is a string", ["poet-train", "--config", f"{fx}/configs/string-lr.yaml"]),
        Case("config", "poet-train: unknown key (typo)", ["poet-train", "--config", f"{fx}/configs/typo.yaml"]),
        Case(
            "config",
            "poet-train: nheads does not divide hidden_dim",
            ["poet-train", "--config", f"{fx}/configs/heads.yaml"],
        ),
        Case("config", "poet-train: code-executing YAML tag", ["poet-train", "--config", f"{fx}/configs/tag.yaml"]),
        Case("config", "poet-train: not YAML", ["poet-train", "--config", f"{fx}/configs/not-yaml.yaml"]),
        # --- COCO files
        *[
            Case("coco", f"poet-eval: {name}", ev(bad(name)))
            for name in (
                "dup-image-id",
                "dup-ann-id",
                "unknown-image",
                "no-images",
                "null-keypoints",
                "string-visibility",
                "short-bbox",
                "50-keypoints",
                "nan-keypoint",
                "no-categories",
                "not-json",
            )
        ],
        Case(
            "coco",
            "poet-export: calibration COCO file with duplicate ids",
            [
                "poet-export",
                ckpt,
                "-o",
                "m.onnx",
                "--precision",
                "int8",
                "--calib-images",
                f"{data}/val2017",
                "--calib-annotations",
                bad("dup-image-id"),
            ],
            writes_nothing=True,
        ),
        # --- TensorRT
        Case(
            "tensorrt",
            "poet-build-engine: TensorRT 8.6 installed",
            ["poet-build-engine", ckpt, "--fp16", "-o", "e/m.engine"],
            env={"PYTHONPATH": str(fx / "old-tensorrt")},
            text="TensorRT 8.6.1 is installed",
            writes_nothing=True,
        ),
        Case(
            "tensorrt",
            "poet-build-engine: DLA with a dynamic batch",
            ["poet-build-engine", ckpt, "--fp16", "--max-batch", "2", "--dla-core", "0", "-o", "e/m.engine"],
            writes_nothing=True,
        ),
        Case(
            "tensorrt",
            "poet-build-engine: --max-batch on a fixed-batch ONNX",
            ["poet-build-engine", onnx_model, "--fp32", "--max-batch", "2", "-o", "m.engine"],
            writes_nothing=True,
        ),
        Case(
            "tensorrt",
            "poet-build-engine: engine path is the ONNX",
            ["poet-build-engine", onnx_model, "--fp32", "-o", onnx_model],
            text="it is the input",
        ),
        # --- outputs: never overwrite an input, never a partial file, checked before the work
        Case(
            "output",
            "poet-run: --save-images into the input folder",
            [*run, photo, "--model", onnx_model, "--save-images", photo],
        ),
        Case("output", "poet-run: --jsonl is a folder", [*run, photo, "--model", onnx_model, "--jsonl", photo]),
        Case("output", "poet-run: --jsonl is the input image", [*run, one, "--model", onnx_model, "--jsonl", one]),
        Case("output", "poet-run: --save-video is a folder", [*run, photo, "--model", onnx_model, "--save-video", "."]),
        Case(
            "output",
            "poet-run: same names in a folder tree",
            [*run, f"{fx}/nested", "--model", onnx_model, "--save-images", "out"],
            code=0,
            writes=["out/a/x.jpg", "out/b/x.jpg"],
        ),
        Case(
            "output",
            "poet-run: y.jpg and y.png",
            [*run, f"{fx}/mixed", "--model", onnx_model, "--save-images", "out"],
            code=0,
            text="2 frames",
        ),
        Case(
            "output",
            "poet-predict: same names in two folders",
            ["poet-predict", f"{fx}/nested/a", f"{fx}/nested/b", "--checkpoint", ckpt, "-o", "out", "--no-progress"],
            code=0,
            writes=["out/x_poses.png", "out/x_poses-2.png", "out/poses.json"],
        ),
        Case("output", "poet-predict: -o is a file", ["poet-predict", one, "--checkpoint", ckpt, "-o", one]),
        Case("output", "poet-export: -o is the checkpoint", ["poet-export", ckpt, "-o", ckpt]),
        Case("output", "poet-export: -o is a folder", ["poet-export", ckpt, "-o", str(fx)]),
        Case("output", "poet-export: -o under a file", ["poet-export", ckpt, "-o", f"{onnx_model}/m.onnx"]),
        Case(
            "output",
            "poet-eval: --results is a folder",
            ["poet-eval", ckpt, "--data", data, "--results", str(fx), "--no-progress"],
            text="it is a folder",
        ),
        Case(
            "output",
            "poet-train: --output is a file",
            ["poet-train", "--config", "synthetic-small", "--data", data, "--output", one],
            text="is a file, not a folder",
        ),
        Case(
            "output",
            "poet-bench: -o under a file",
            ["poet-bench", "--checkpoint", ckpt, "--data", data, "--variants", "torch", "-o", f"{one}/bench"],
        ),
        Case("output", "poet-synth: OUT_DIR is a file", ["poet-synth", one, "--train", "2", "--val", "1"]),
        Case(
            "output",
            "poet-export: read-only folder",
            ["poet-export", ckpt, "-o", "ro/m.onnx"],
            setup=ro_mount(Path("ro")),
            needs_root=True,
        ),
        Case(
            "output",
            "poet-run: --jsonl in a read-only folder",
            [*run, photo, "--model", onnx_model, "--jsonl", "ro/poses.jsonl"],
            setup=ro_mount(Path("ro")),
            needs_root=True,
        ),
        Case(
            "output",
            "poet-export: disk full",
            ["poet-export", ckpt, "-o", "full/m.onnx"],
            setup=full_mount(Path("full")),
            needs_root=True,
        ),
        Case(
            "output",
            "poet-predict: disk full",
            ["poet-predict", photo, "--checkpoint", ckpt, "-o", "full/out", "--no-progress"],
            setup=full_mount(Path("full"), "64k"),
            needs_root=True,
        ),
        Case(
            "output",
            "poet-run: --save-video fills the disk, an earlier video there",
            [*run, f"{fx}/clip.avi", "--model", onnx_model, "--save-video", "full/v.mp4"],
            text="no space left on device",
            setup=full_mount(Path("full"), "96k", earlier="v.mp4"),
            keeps=["full/v.mp4"],
            needs_root=True,
        ),
        Case(
            "output",
            "poet-train: disk full while writing the checkpoint",
            [
                *["poet-train", "--data", data, "--output-dir", "full", "--epochs", "1", "--eval-every", "0"],
                *["--input-size", "96", "96", "--batch-size", "4", "--num-workers", "0", "--no-progress"],
                *[
                    "--no-tensorboard",
                    "--backbone",
                    "resnet18",
                    "--backbone-width",
                    "8",
                    "--hidden-dim",
                    "32",
                    "--nheads",
                    "2",
                ],
                *["--enc-layers", "1", "--dec-layers", "2", "--dim-feedforward", "64", "--num-queries", "8"],
            ],
            text="no space left on device: torch.save failed",
            setup=full_mount(Path("full"), "1024k"),
            needs_root=True,
        ),
        # --- odd but valid inputs
        Case("valid", "poet-run: non-ASCII file name", [*run, str(fx / "fötö ü.jpg"), "--model", onnx_model], code=0),
        Case("valid", "poet-run: 1x1 image", [*run, str(fx / "tiny-1px.png"), "--model", onnx_model], code=0),
        Case("valid", "poet-run: 9000x6000 image", [*run, str(fx / "huge.png"), "--model", onnx_model], code=0),
        Case("valid", "poet-run: grey (2-D) PNG", [*run, str(fx / "grey.png"), "--model", onnx_model], code=0),
        Case(
            "valid",
            "poet-run: symlinked input folder",
            [*run, "link", "--model", onnx_model],
            code=0,
            setup=lambda case: (case / "link").symlink_to(fx / "photos"),
        ),
        # --- kills, caches and threads
        Case(
            "fault",
            "poet-export: a killed run's temporary file",
            ["poet-export", ckpt, "-o", "m.onnx"],
            code=0,
            writes=["m.onnx"],
            setup=killed_writer("m.onnx"),
        ),
        Case(
            "fault",
            "poet-export: damaged calibration cache entry",
            [*calibrate, "--cache-dir", "cache"],
            code=0,
            text="calibrating again",
            setup=damaged_cache(calibrate),
        ),
        Case(
            "fault",
            "PoseEstimator shared by 4 threads",
            [sys.executable, "-c", THREADS.format(model=onnx_model, photos=photo)],
            code=0,
            text="threads agree",
        ),
        # --- signals
        Case(
            "signal",
            "poet-synth: Ctrl-C mid-run",
            ["poet-synth", "synth", "--train", "100000", "--val", "1", "--no-progress"],
            code=130,
            text="interrupted",
            interrupt_after=6.0,
        ),
    ]


def run_case(case: Case, folder: Path, fixtures: Path, is_root: bool) -> tuple[bool, str]:
    """Run one case in ``folder``; (passed, what was observed)."""
    if case.needs_root and not is_root:
        return True, "skipped (needs root for a tmpfs mount)"
    folder.mkdir(parents=True)
    mounts: list[Path] = []
    if case.setup is not None:
        case.setup(folder)
        mounts = [path for path in folder.iterdir() if os.path.ismount(path)]
    before = digest_tree(fixtures)
    kept = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in case.keeps}
    listed_before = {path.name for path in folder.iterdir()}
    env = {**os.environ, **case.env, "PYTHONUNBUFFERED": "1"}
    try:
        if case.interrupt_after is None:
            result = subprocess.run(case.argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
            code, out, err = result.returncode, result.stdout, result.stderr
        else:
            process = subprocess.Popen(case.argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(case.interrupt_after)
            process.send_signal(signal.SIGINT)
            out_bytes, err_bytes = process.communicate(timeout=120)
            code, out, err = process.returncode, out_bytes.decode(), err_bytes.decode()
        problems = []
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if code != case.code:
            problems.append(f"exit {code}, expected {case.code}")
        if "Traceback" in err:
            problems.append("traceback")
        if case.code == 2:
            errors = [line for line in lines if line.startswith("error:")]
            if len(errors) != 1 or not lines or not lines[-1].startswith("error:"):
                problems.append(f"{len(errors)} error lines")
        if case.text and case.text not in out + err:
            problems.append(f"no {case.text!r}")
        problems += [f"missing {path}" for path in case.writes if not (folder / path).exists()]
        leftovers = [str(path) for path in folder.rglob("*") if ".poet-tmp-" in path.name]
        problems += [f"temporary left: {path}" for path in leftovers]
        if case.writes_nothing:
            made = [path.name for path in folder.iterdir() if path.name not in listed_before]
            problems += [f"wrote {name}" for name in made]
        if digest_tree(fixtures) != before:
            problems.append("an input changed")
        for name, digest in kept.items():
            if not (folder / name).is_file() or hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                problems.append(f"{name} was not kept")
        out_lines = out.strip().splitlines()
        last = out_lines[-1] if code == 0 and out_lines else (lines[-1] if lines else "")
        observed = f"exit {code}: {last}"
        return not problems, observed + ("" if not problems else f"  <-- {'; '.join(problems)}")
    finally:
        for mount in mounts:
            subprocess.run(["umount", str(mount)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("build/bad-inputs"), help="scratch folder (emptied)")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    fixtures = args.work / "fixtures"
    build_fixtures(fixtures)
    is_root = os.geteuid() == 0
    selected = [case for case in cases(fixtures.resolve()) if not args.only or args.only in case.name]
    print("| # | class | case | expected | observed | ok |")
    print("|---|---|---|---|---|---|")
    failures = 0
    for number, case in enumerate(selected, 1):
        passed, observed = run_case(case, args.work / f"case-{number:02d}", fixtures, is_root)
        failures += not passed
        expected = {0: "exit 0", 2: "exit 2, one error: line", 130: "exit 130"}[case.code]
        print(f"| {number} | {case.kind} | {case.name} | {expected} | {observed[:300]} | {'yes' if passed else 'NO'} |")
        sys.stdout.flush()
    print(f"\n{len(selected) - failures} of {len(selected)} cases as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
