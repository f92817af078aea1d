"""poet-bench on a small real model and real COCO photographs: figures, report files, regressions, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from poet.benchmarks import bench, bench_report

STAGES = ("preprocess", "inference", "postprocess", "total")


def bench_argv(checkpoint: Path, coco: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(coco),
        "--limit",
        "3",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--work-dir",
        str(root / "variants"),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, coco: Path) -> Path:
    """One full run: PyTorch, ONNX FP32 and INT8 for CPU at batch 1 and 2, TensorRT and PyTorch FP16 requested."""
    root = tmp_path_factory.mktemp("bench")
    variants = ["torch", "onnx-fp32", "onnx-int8-cpu", "trt-fp16", "trt-int8", "torch-fp16"]
    calibration = ["--calib-images", str(coco / "train2017"), "--calib-count", "4"]
    argv = bench_argv(tiny_checkpoint, coco, root, "--variants", *variants, "--batch", "1", "2", *calibration)
    assert bench.main([*argv, "--output", str(root / "out")]) == 0
    return root


def test_report_has_real_figures_for_every_variant(bench_run: Path) -> None:
    report = json.loads((bench_run / "out" / "bench.json").read_text())
    variants = {variant["name"]: variant for variant in report["variants"]}
    assert list(variants) == ["torch", "onnx-fp32", "onnx-int8-cpu", "trt-fp16", "trt-int8", "torch-fp16"]
    for name in ("torch", "onnx-fp32", "onnx-int8-cpu"):
        variant = variants[name]
        assert variant["status"] == "ok" and Path(variant["model_path"]).is_file()
        assert [row["batch"] for row in variant["batches"]] == [1, 2]
        for row in variant["batches"]:
            assert row["iterations"] == 3
            for stage in STAGES:
                stats = row["latency_ms"][stage]
                assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"]
            assert row["latency_ms"]["total"]["p50"] >= row["latency_ms"]["inference"]["p50"]
            assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["latency_ms"]["total"]["p50"], 0.01)
        assert 0.0 <= variant["accuracy"]["AP"] <= 1.0 and 0.0 <= variant["accuracy"]["AR"] <= 1.0
        assert set(variant["accuracy"]) >= {"AP", "AP50", "AR"}
    assert variants["onnx-int8-cpu"]["model_path"].endswith("model.int8-cpu.onnx")
    # Each ONNX Runtime session allocates its own memory, also after earlier variants freed theirs.
    assert all(variants[name]["memory_mib"]["rss_added"] > 0 for name in ("onnx-fp32", "onnx-int8-cpu"))
    for name in ("trt-fp16", "trt-int8"):
        assert variants[name]["status"] == "skipped" and "TensorRT not installed" in variants[name]["reason"]
        assert variants[name]["batches"] == []
    if not torch.cuda.is_available():
        assert variants["torch-fp16"]["status"] == "skipped" and "CUDA" in variants["torch-fp16"]["reason"]
    environment = report["environment"]
    assert environment["cpu"] and environment["cpu_cores"] >= 1 and environment["peak_rss_mib"] > 0
    assert {"python", "torch", "onnxruntime", "numpy", "opencv-python-headless"} <= set(environment["versions"])
    assert report["data"]["count"] == 3 and report["settings"]["batches"] == [1, 2]


def test_markdown_table_and_plot(bench_run: Path) -> None:
    markdown = (bench_run / "out" / "bench.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [tuple(row.split(" | ")[:2]) for row in rows] == [
        ("| torch", "1"),
        ("| torch", "2"),
        ("| onnx-fp32", "1"),
        ("| onnx-fp32", "2"),
        ("| onnx-int8-cpu", "1"),
        ("| onnx-int8-cpu", "2"),
    ]
    assert rows[0].endswith("| 1.00x |")
    assert "- trt-fp16 (skipped): TensorRT not installed" in markdown
    assert (bench_run / "out" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_flags_injected_regressions(
    bench_run: Path, tiny_checkpoint: Path, coco: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = json.loads((bench_run / "out" / "bench.json").read_text())
    torch_record = old["variants"][0]
    fast, slow = torch_record["batches"]
    fast["latency_ms"]["total"]["p50"] /= 10  # the old run was 10x faster at batch 1: now a regression
    slow["latency_ms"]["total"]["p50"] *= 10  # and 10x slower at batch 2: an improvement, not flagged
    torch_record["accuracy"]["AP"] = 0.9
    baseline = bench_run / "old.json"
    baseline.write_text(json.dumps(old))
    output = bench_run / "compared"
    argv = bench_argv(tiny_checkpoint, coco, bench_run, "--variants", "torch", "--batch", "1", "2")
    code = bench.main([*argv, "--output", str(output), "--compare", str(baseline), "--fail-on-regression"])
    assert code == 1
    regressions = json.loads((output / "bench.json").read_text())["compare"]["regressions"]
    assert sorted((r["variant"], r["batch"], r["metric"]) for r in regressions) == [
        ("torch", 1, "AP"),
        ("torch", 1, "latency_p50_ms"),
    ]
    markdown = (output / "bench.md").read_text()
    flagged = [line for line in markdown.splitlines() if line.endswith("| **REGRESSION** |")]
    assert len(flagged) == 1 and flagged[0].startswith("| torch | 1 |")
    assert "2 regression(s)" in markdown and "not comparable" not in markdown
    printed = capsys.readouterr().out
    assert "regression: torch batch 1: p50" in printed and "regression: torch: AP" in printed


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no annotations", "annotation file"),
        ("unknown variant", "unknown variant 'onnx-int4'; valid variants: torch, torch-fp16, onnx-fp32"),
        ("missing checkpoint", "checkpoint"),
        ("not a report", "is not a poet-bench report"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(
    case: str, message: str, tmp_path: Path, tiny_checkpoint: Path, coco: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint, variants, extra = coco, tiny_checkpoint, ["torch", "onnx-fp32"], []
    if case == "no annotations":
        data = tmp_path / "photos"
        (data / "val2017").mkdir(parents=True)
        shutil.copy(next((coco / "val2017").iterdir()), data / "val2017")
    elif case == "unknown variant":
        variants = ["torch", "onnx-int4"]
    elif case == "missing checkpoint":
        checkpoint = tmp_path / "missing.pth"
    else:
        (tmp_path / "old.json").write_text("[1, 2]")
        extra = ["--compare", str(tmp_path / "old.json")]
    output = tmp_path / "out"
    argv = bench_argv(checkpoint, data, tmp_path, "--variants", *variants, "--output", str(output), *extra)
    assert bench.main(argv) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]
    assert not output.exists() and not (tmp_path / "variants").exists()


@pytest.mark.parametrize(
    ("module", "stage"),
    [(bench, "measure"), (bench_report, "markdown_table")],  # while timing; after the plot's temp file is written
)
def test_interrupted_run_keeps_previous_report_and_reuses_variants(
    module: object,
    stage: str,
    bench_run: Path,
    tiny_checkpoint: Path,
    coco: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = bench_run / f"interrupted-{stage}"
    shutil.copytree(bench_run / "out", output)
    before = {path.name: path.read_bytes() for path in output.iterdir()}
    onnx = bench_run / "variants" / "model.onnx"
    built = onnx.stat().st_mtime_ns

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, stage, interrupt)
    argv = bench_argv(tiny_checkpoint, coco, bench_run, "--variants", "onnx-fp32", "--batch", "1", "2")
    assert bench.main([*argv, "--output", str(output)]) == 130
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert onnx.stat().st_mtime_ns == built  # same checkpoint and settings: reused, not rebuilt
