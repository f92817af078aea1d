"""One CLI vocabulary: a shared option has the same name, form, default and choices in every tool's --help."""

from __future__ import annotations

import re

import pytest

from poet.console import COMMANDS, launch

# The tools whose help is read, with the arguments that print it (the umbrella's subcommand has its own).
HELP_ARGS = {name: ["--help"] for name in COMMANDS} | {"poet": ["quickstart", "--help"]}
TORCH_MODEL_TOOLS = ("poet-eval", "poet-predict", "poet-export", "poet-build-engine", "poet-bench")
CALIBRATING_TOOLS = ("poet-export", "poet-build-engine", "poet-bench")

# option as --help shows it -> the tools that must show it exactly so
SHARED = {
    "--input-size H W": (*TORCH_MODEL_TOOLS, "poet-train"),
    "--batch N": (*TORCH_MODEL_TOOLS, "poet-train"),
    "--calib-images DIR": CALIBRATING_TOOLS,
    "--calib-annotations FILE": CALIBRATING_TOOLS,
    "--calib-count N": CALIBRATING_TOOLS,
    "--calib-method {entropy,max,percentile}": CALIBRATING_TOOLS,
    "--no-progress": tuple(name for name in COMMANDS if name != "poet"),
    "-o PATH, --output PATH": ("poet", "poet-predict", "poet-export", "poet-build-engine", "poet-bench"),
}
# Options of the runtime that poet-serve takes for the model it serves: the same form and help, word for word.
RUNTIME_OPTIONS = (
    "--backend {auto,onnxruntime,tensorrt,openvino}",
    "--precision {fp32,bf16}",
    "--threads N",
    "--device N",
)
SHARED |= dict.fromkeys((*RUNTIME_OPTIONS, "--cuda-graph"), ("poet-run", "poet-serve"))


def _help(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        launch(name, HELP_ARGS[name])
    # argparse wraps long lines; join them so an option and its help read as one.
    return re.sub(r"\s+", " ", capsys.readouterr().out)


@pytest.mark.parametrize("option", SHARED)
def test_a_shared_option_reads_the_same_in_every_tool(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    for name in SHARED[option]:
        assert option in _help(name, capsys), f"{name} --help lacks {option!r}"


def test_calibration_defaults_agree(capsys: pytest.CaptureFixture[str]) -> None:
    for name in CALIBRATING_TOOLS:
        text = _help(name, capsys)
        assert re.search(r"--calib-count N calibration images to use \(default: 512\)", text), name
        assert "(default: entropy)" in text, name


def test_model_means_an_exported_model_and_checkpoint_a_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    for name in COMMANDS:
        text = _help(name, capsys)
        assert ("--model MODEL" in text) == (name == "poet-run"), name
    for name in ("poet-predict", "poet-bench"):
        assert "--checkpoint CHECKPOINT" in _help(name, capsys), name


def test_bench_lists_the_variant_table(capsys: pytest.CaptureFixture[str]) -> None:
    from poet.optimize.variants import VARIANTS

    text = _help("poet-bench", capsys)
    for row in VARIANTS:
        assert f"| {row.name} | {row.precision} |" in text


def test_poet_serve_says_the_runtime_options_as_poet_run_does(capsys: pytest.CaptureFixture[str]) -> None:
    run, serve = _help("poet-run", capsys), _help("poet-serve", capsys)
    for option in RUNTIME_OPTIONS:
        said = [re.search(re.escape(option) + r" (.*?) (-\w|--\w)", text) for text in (run, serve)]
        assert said[0] and said[1] and said[0].group(1) == said[1].group(1), option
