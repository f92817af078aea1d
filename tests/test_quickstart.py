"""The README's main job runs end to end (tiny sizes here; the real run is in the closing notes)."""

from __future__ import annotations

from poet.cli import main


def test_quickstart_writes_report_checkpoint_and_drawings(tmp_path, capsys):
    output = tmp_path / "quick"
    arguments = ["quickstart", "--output", str(output), "--train-images", "8", "--val-images", "3", "--epochs", "1"]
    assert main(arguments) == 0
    report = (output / "report.md").read_text()
    assert "| AP | AP50 |" in report and "## Time per stage" in report
    assert (output / "train" / "checkpoint.pth").is_file() and (output / "train" / "metrics.csv").is_file()
    assert len(list((output / "poses").glob("*.png"))) == 3
    assert "## Every backend and precision" in report and (output / "bench" / "bench.png").is_file()
    for variant in ("| torch |", "| onnx-fp32 |", "| onnx-fp16 |", "| onnx-int8 |"):
        assert variant in report
    assert "trt-int8" in report  # listed as skipped where TensorRT is missing, never dropped
    assert "report written to" in capsys.readouterr().out
