"""The README's main job runs end to end (tiny sizes here; the real run is in the closing notes)."""

from __future__ import annotations

import json

import cv2
import pytest
from readme_results import BEGIN, END, results_section
from readme_results import main as readme_results

from poet.benchmarks.quickstart import main
from poet.errors import PoetError


def test_quickstart_writes_report_checkpoint_and_drawings(tmp_path, capsys):
    output = tmp_path / "quick"
    arguments = ["quickstart", "--output", str(output), "--train-images", "16", "--val-images", "3", "--epochs", "1"]
    assert main(arguments) == 0
    report = (output / "report.md").read_text()
    assert "| AP | AP50 |" in report and "## Time per stage" in report
    assert (output / "train" / "checkpoint.pth").is_file() and (output / "train" / "metrics.csv").is_file()
    drawings = sorted((output / "poses").glob("*.png"))
    assert len(drawings) == 3
    assert all(min(cv2.imread(str(path)).shape[:2]) >= 384 for path in drawings), "small inputs drawn enlarged"
    assert "## Every backend and precision" in report and (output / "bench" / "bench.png").is_file()
    for variant in ("| torch |", "| onnx-fp32 |", "| onnx-fp16 |", "| onnx-int8-cpu |", "| openvino-bf16 |"):
        assert variant in report
    assert "trt-int8" in report  # listed as skipped where TensorRT is missing, never dropped
    assert "report written to" in capsys.readouterr().out
    check_readme_results(output, tmp_path)


def check_readme_results(run, tmp_path):
    """The README's Results section is generated from that run's own files, between its markers only."""
    summary = json.loads((run / "summary.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Results\n\n{BEGIN}\nold figures\n{END}\n\n## Next\n")
    readme_results([str(run), "--readme", str(readme), "--where", "a test"])
    text = readme.read_text()
    assert "old figures" not in text and text.startswith("# title") and text.endswith(f"{END}\n\n## Next\n")
    assert f"AP {summary['accuracy']['AP']:.3f}" in text and "| onnx-int8-cpu | 1 |" in text and "a test" in text
    recipe = summary["recipe"]
    assert f"- Model: {recipe['backbone']} at width {recipe['backbone_width']} + " in text
    assert f"with {recipe['num_queries']} queries" in text
    assert ("keypoint refinement" in text) == recipe["keypoint_refinement"]
    assert f"dense encoder supervision at weight {recipe['encoder_aux_coef']:g}" in text
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit) as exit_info:
        readme_results([str(run), "--readme", str(readme)])
    assert exit_info.value.code == 2 and readme.read_text() == "# no markers\n"
    with pytest.raises(PoetError, match="summary.json is missing"):
        results_section(tmp_path / "nothing", "x")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "summary.json").write_text('{"bench": "bench/bench.json"}')
    with pytest.raises(PoetError, match="lacks accuracy"):
        results_section(tmp_path / "partial", "x")
