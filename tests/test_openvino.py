"""OpenVINO as a runtime backend on real COCO photographs: ONNX Runtime's poses, explicit precision, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnx
import pytest

from poet.errors import BackendError, MissingExtraError, ModelError
from poet.images import read_image
from poet.runtime import PoseEstimator
from poet.runtime import openvino_backend as ov_backend
from poet.runtime.cli import main as poet_run

openvino = pytest.importorskip("openvino")
HAS_BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def images(coco):
    return [read_image(path) for path in sorted((coco / "val2017").glob("*.jpg"))[:6]]


def _differences(expected, actual) -> np.ndarray:
    """Every keypoint's x/y distance in pixels between two runs' poses, whose person counts must be equal."""
    assert [len(poses) for poses in actual] == [len(poses) for poses in expected]
    return np.concatenate(
        [
            np.abs(a.keypoints[:, :2] - b.keypoints[:, :2]).ravel()
            for poses_a, poses_b in zip(expected, actual, strict=True)
            for a, b in zip(poses_a, poses_b, strict=True)
        ]
    )


@pytest.mark.parametrize("layout", ["uint8", "float"])
def test_openvino_fp32_gives_onnx_runtimes_poses(runtime_models, images, layout):
    """Raw outputs (uint8 input, fixed batch 2) and decoded ones (float input, dynamic batch up to 4)."""
    reference = PoseEstimator(runtime_models[layout], score_threshold=0.0).predict_arrays(images)
    estimator = PoseEstimator(runtime_models[layout], "openvino", score_threshold=0.0)
    assert estimator.backend.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert _differences(reference, estimator.predict_arrays(images)).max() < 1e-2


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16")
def test_bf16_is_asked_for_and_moves_keypoints_a_little(runtime_models, images):
    reference = PoseEstimator(runtime_models["uint8"], score_threshold=0.0).predict_arrays(images)
    estimator = PoseEstimator(runtime_models["uint8"], "openvino", precision="bf16", score_threshold=0.0)
    assert estimator.backend.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.bf16
    differences = _differences(reference, estimator.predict_arrays(images))
    assert 0 < differences.mean() < 2.0  # bf16 really ran, and stayed close (the 128x128 model, photos ~640 px)


def test_bf16_on_a_cpu_without_it_is_refused(runtime_models, monkeypatch):
    class NoBf16Core:
        def __init__(self) -> None:
            self.core = openvino.Core()

        def get_property(self, device, name):
            return ["FP32", "INT8"] if name == "OPTIMIZATION_CAPABILITIES" else self.core.get_property(device, name)

    monkeypatch.setattr(ov_backend, "openvino_core", NoBf16Core)
    with pytest.raises(BackendError, match="this CPU cannot run OpenVINO in bf16 .*use precision fp32"):
        PoseEstimator(runtime_models["uint8"], "openvino", precision="bf16")


def test_openvino_ir_is_read_by_its_suffix(runtime_models, images, tmp_path):
    """IR saved from the ONNX keeps the model info; ``.xml`` picks OpenVINO (FP32 weights: save_model's default
    FP16 compression would move keypoints by pixels)."""
    ir = tmp_path / "tiny.xml"
    openvino.save_model(openvino.Core().read_model(runtime_models["float"]), ir, compress_to_fp16=False)
    estimator = PoseEstimator(ir, score_threshold=0.0)
    assert isinstance(estimator.backend, ov_backend.OpenVinoBackend)
    reference = PoseEstimator(runtime_models["float"], score_threshold=0.0).predict_arrays(images)
    assert _differences(reference, estimator.predict_arrays(images)).max() < 1e-2


def test_precision_and_backend_choices_are_clear_errors(runtime_models):
    with pytest.raises(BackendError, match="OpenVINO precision must be one of fp32, bf16, got 'int4'"):
        PoseEstimator(runtime_models["uint8"], "openvino", precision="int4")
    with pytest.raises(BackendError, match="precision 'bf16' chooses OpenVINO's float precision; onnxruntime runs"):
        PoseEstimator(runtime_models["uint8"], precision="bf16")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of onnxruntime, tensorrt, openvino"):
        PoseEstimator(runtime_models["uint8"], "openvion")


def test_bad_files_are_one_clear_error(runtime_models, tiny_checkpoint, tmp_path):
    foreign = onnx.load(runtime_models["uint8"])
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(ModelError, match="foreign.onnx is not a poet-edge model"):
        PoseEstimator(tmp_path / "foreign.onnx", "openvino")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not protobuf")
    with pytest.raises(ModelError, match="garbage.onnx is not a model OpenVINO can read: Model can't be parsed"):
        PoseEstimator(tmp_path / "garbage.onnx", "openvino")
    (tmp_path / "renamed.onnx").write_bytes(tiny_checkpoint.read_bytes())
    with pytest.raises(ModelError, match="renamed.onnx is not a model OpenVINO can read: it is a PyTorch checkpoint"):
        PoseEstimator(tmp_path / "renamed.onnx", "openvino")
    (tmp_path / "broken.xml").write_text("<net")
    with pytest.raises(ModelError, match="broken.xml is not a model OpenVINO can read"):
        PoseEstimator(tmp_path / "broken.xml")
    with pytest.raises(ModelError, match="tiny.pth: the openvino backend reads a poet-edge .onnx or OpenVINO IR"):
        PoseEstimator(tiny_checkpoint, "openvino")


def test_without_openvino_the_error_names_the_extra(runtime_models, coco, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'poet-edge\[openvino\]' \(openvino is not installed\)"):
        PoseEstimator(runtime_models["uint8"], "openvino")
    from poet.console import launch

    photo = next((coco / "val2017").glob("*.jpg"))
    code = launch("poet-run", [str(photo), "--model", str(runtime_models["uint8"]), "--backend", "openvino"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: the openvino backend needs the OpenVINO extra: pip install 'poet-edge[openvino]' "
        "(openvino is not installed)"
    ]


def test_threads_share_one_estimator(runtime_models, images):
    """Each thread gets its own infer request: 3 threads x the 6 photographs give the sequential poses."""
    estimator = PoseEstimator(runtime_models["uint8"], "openvino", score_threshold=0.0, threads=1)
    expected = [estimator.predict_arrays([image])[0] for image in images]
    got: dict[tuple[int, int], list] = {}

    def work(thread: int) -> None:
        for index in range(len(images)):
            shifted = (index + 2 * thread) % len(images)
            got[thread, index] = [shifted, estimator.predict_arrays([images[shifted]])[0]]

    workers = [threading.Thread(target=work, args=(thread,)) for thread in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(got) == 3 * len(images)
    for index, poses in got.values():
        assert _differences([expected[index]], [poses]).max() == 0


def test_poet_run_with_openvino_bf16_writes_the_poses(runtime_models, coco, tmp_path):
    jsonl = tmp_path / "poses.jsonl"
    precision = "bf16" if HAS_BF16 else "fp32"
    argv = [str(coco / "val2017"), "--model", str(runtime_models["uint8"]), "--backend", "openvino"]
    assert poet_run([*argv, "--precision", precision, "--jsonl", str(jsonl), "--no-progress"]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == len(list((coco / "val2017").glob("*.jpg")))
    assert all(len(pose["keypoints"]) == 17 for record in records for pose in record["poses"])


def test_the_openvino_backend_imports_no_torch(runtime_models, coco):
    script = textwrap.dedent(
        f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "onnx", "scipy", "pycocotools"):
                    raise ImportError(name + " is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        from poet.runtime import PoseEstimator

        photo = {str(next((coco / "val2017").glob("*.jpg")))!r}
        poses = PoseEstimator({str(runtime_models["float"])!r}, "openvino", score_threshold=0.0).predict(photo)
        print("ok", len(poses))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok 6"


def test_estimators_released_out_of_order_leave_ctrl_c_working(runtime_models):
    """Two cameras' estimators, the first closed first, then Ctrl-C: a clean KeyboardInterrupt, not a crash."""
    script = textwrap.dedent(
        f"""
        import signal
        from poet.runtime import PoseEstimator

        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, even if the parent ignores Ctrl-C
        first = PoseEstimator({str(runtime_models["float"])!r}, "openvino")
        second = PoseEstimator({str(runtime_models["float"])!r}, "openvino")
        del first, second
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stdout.splitlines()[-1] == "interrupted"


def test_poet_bench_runs_the_openvino_variants_beside_onnx_runtime(tiny_checkpoint, coco, tmp_path, monkeypatch):
    """Same file, same AP: OpenVINO fp32 scores ONNX Runtime's AP; bf16 stays within a point; a missing OpenVINO
    is a skipped row with the reason, not a failed run."""
    import importlib.util

    from poet.benchmarks import bench

    variants = ["onnx-fp32", "openvino-fp32", "openvino-bf16"]
    argv = ["--checkpoint", str(tiny_checkpoint), "--data", str(coco), "--limit", "4", "--iters", "2", "--warmup", "1"]
    argv += ["--work-dir", str(tmp_path / "variants"), "--no-progress", "--variants", *variants]
    assert bench.main([*argv, "--output", str(tmp_path / "out")]) == 0
    rows = {row["name"]: row for row in json.loads((tmp_path / "out" / "bench.json").read_text())["variants"]}
    assert rows["openvino-fp32"]["status"] == "ok"
    assert rows["openvino-fp32"]["model_path"] == rows["onnx-fp32"]["model_path"]
    assert rows["openvino-fp32"]["accuracy"]["AP"] == pytest.approx(rows["onnx-fp32"]["accuracy"]["AP"], abs=1e-3)
    if HAS_BF16:
        assert rows["openvino-bf16"]["status"] == "ok"
        assert rows["openvino-bf16"]["accuracy"]["AP"] == pytest.approx(rows["onnx-fp32"]["accuracy"]["AP"], abs=0.01)
    else:
        assert "cannot run OpenVINO in bf16" in rows["openvino-bf16"]["reason"]

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else find_spec(name, *a)
    )
    assert bench.main([*argv, "--output", str(tmp_path / "without")]) == 0
    rows = {row["name"]: row for row in json.loads((tmp_path / "without" / "bench.json").read_text())["variants"]}
    assert rows["onnx-fp32"]["status"] == "ok"
    for name in ("openvino-fp32", "openvino-bf16"):
        assert rows[name]["status"] == "skipped"
        assert rows[name]["reason"] == 'OpenVINO not installed (pip install "poet-edge[openvino]")'
