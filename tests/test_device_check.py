"""The prepared GPU check runs from the bare checkout; without CUDA every GPU row says why it was skipped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_device_check_script_reports_every_row_and_skips_the_gpu_ones_without_cuda(tmp_path):
    small = ["--backbone", "resnet18", "--input-size", "128", "--batches", "1,2", "--iters", "2"]
    small += ["--cpu-iters", "2", "--train-steps", "1", "--train-batch", "2"]
    # PYTHONPATH is cleared so the script's own layout of the checkout is what gets imported.
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": ""}
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "scripts" / "device_check.sh"), *small],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    rows = report["rows"]
    inference = [row for row in rows if row["name"] == "torch-inference"]
    assert {(r["precision"], r["batch"], r["cuda_graph"]) for r in inference} == {
        (p, b, g) for p in ("fp32", "fp16") for b in (1, 2) for g in (False, True)
    }
    tensorrt = {"tensorrt-graphs", "tensorrt-capture-fallback", "tensorrt-threads"}
    assert {row["name"] for row in rows} == {
        "torch-inference",
        "torch-training",
        "runtime-cuda",
        "onnxruntime-cpu",
        *tensorrt,
    }
    gpu_rows = [row for row in rows if row["name"] != "onnxruntime-cpu"]
    if not torch.cuda.is_available():
        assert all(row["status"] == "skipped" and row["reason"] for row in gpu_rows)
        assert "SKIPPED: no CUDA device" in result.stdout
        for row in (row for row in rows if row["name"] in tensorrt):
            assert row["reason"].startswith("no CUDA device visible to torch") and row["max_batch"] == 4
    assert all(row["status"] != "failed" for row in rows)
    control = next(row for row in rows if row["name"] == "onnxruntime-cpu")
    assert control["status"] == "ok" and 0 < control["p50_ms"] <= control["p99_ms"]
    assert "device check on" in result.stdout and "onnxruntime-cpu" in result.stdout
