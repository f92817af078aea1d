"""The command-line tools: one table of them, their shared options, their launchers and the one error boundary.

Stdlib only. The shared option groups give every tool the same name, default and meaning for the same thing
(``--input-size``, ``--batch``, the calibration options, ``-o/--output``, ``--no-progress``). Every console
script of ``pyproject.toml`` points at a launcher here, which imports the tool's module inside the boundary:
on an install without the tool's extra, the user gets one line naming the extra to install instead of a
ModuleNotFoundError traceback, whether the import fails at start-up or later inside the tool.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from poet.errors import PoetError
from poet.extras import check_installed, missing_extra


@dataclass(frozen=True)
class Command:
    target: str  # "module:function" of the tool's main(argv) -> exit code
    extras: tuple[str, ...]  # the extras it needs beyond the base install
    summary: str
    said_as: str = ""  # how errors name it, when not by its own name


COMMANDS: dict[str, Command] = {
    "poet": Command(
        "poet.benchmarks.quickstart:main",
        ("train", "bench"),
        "the whole pipeline on synthetic people",
        "poet quickstart",
    ),
    "poet-run": Command("poet.runtime.cli:main", (), "poses from an exported model on images, videos, cameras"),
    "poet-synth": Command("poet.synthetic:main", (), "synthetic people in COCO's layout"),
    "poet-eval": Command("poet.cli:eval_main", ("model",), "OKS AP/AR of a checkpoint on a COCO dataset"),
    "poet-predict": Command("poet.cli:predict_main", ("model",), "poses drawn by a checkpoint (PyTorch)"),
    "poet-train": Command("poet.train.cli:main", ("train",), "train or fine-tune POET"),
    "poet-export": Command("poet.optimize.cli:main", ("optimize",), "ONNX export with FP16 and INT8 variants"),
    "poet-build-engine": Command("poet.optimize.build_cli:main", ("tensorrt",), "TensorRT engine from an ONNX"),
    "poet-bench": Command("poet.benchmarks.bench:main", ("bench",), "latency beside OKS AP for every variant"),
    "poet-serve": Command("poet.runtime.serve_cli:main", ("serve",), "a Triton Inference Server for an exported model"),
}


# ---------------------------------------------------------------- the shared options

# INT8 calibration: how many images and which statistic, the same in poet-export, poet-build-engine and poet-bench.
CALIBRATION_METHODS = ("entropy", "max", "percentile")
DEFAULT_CALIBRATION_COUNT = 512
# The type INT8 for TensorRT runs its unquantized ops in (LayerNorm, softmax and reductions stay FP32 either way).
INT8_FLOAT_TYPES = ("fp16", "fp32")
DEFAULT_INT8_FLOAT = "fp16"


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type for rates and durations: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def add_input_size(parser: argparse.ArgumentParser, default: tuple[int, int] | None = None) -> None:
    """``--input-size H W``: the letterbox size; without a default, the model's own."""
    told = f"{default[0]} {default[1]}" if default else "the model's own"
    parser.add_argument(
        "--input-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=default,
        help=f"letterbox size, height and width (default: {told})",
    )


def input_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--input-size`` as a (height, width) tuple, or None for the model's own."""
    return (int(args.input_size[0]), int(args.input_size[1])) if args.input_size else None


def add_batch(
    parser: argparse.ArgumentParser, *, dynamic: bool = False, several: bool = False, default: int = 1
) -> None:
    """``--batch``: images per inference; ``dynamic`` adds ``--max-batch`` (an exported model's batch range),
    ``several`` takes a list of batch sizes to compare."""
    if several:
        parser.add_argument(
            "--batch",
            type=positive_int,
            nargs="+",
            metavar="N",
            default=[default],
            help=f"batch sizes to time (default: {default})",
        )
        return
    if not dynamic:
        parser.add_argument(
            "--batch",
            type=positive_int,
            metavar="N",
            default=default,
            help=f"images per forward pass (default: {default})",
        )
        return
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument(
        "--batch", type=positive_int, metavar="N", help=f"fixed batch size of the model (default: {default})"
    )
    batch.add_argument("--max-batch", type=positive_int, metavar="N", help="dynamic batch, from 1 up to N")


def add_calibration(parser: argparse.ArgumentParser, title: str = "INT8 calibration") -> None:
    """The calibration images and method of an INT8 variant (``poet-bench``; the exporters use
    :func:`add_precision_options`)."""
    group = parser.add_argument_group(title)
    group.add_argument("--calib-images", type=Path, metavar="DIR", help="folder of calibration images")
    group.add_argument(
        "--calib-annotations", type=Path, metavar="FILE", help="COCO keypoints JSON choosing the calibration images"
    )
    group.add_argument(
        "--calib-count",
        type=positive_int,
        metavar="N",
        default=DEFAULT_CALIBRATION_COUNT,
        help=f"calibration images to use (default: {DEFAULT_CALIBRATION_COUNT})",
    )
    group.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default=CALIBRATION_METHODS[0],
        help="calibration statistic; TensorRT's INT8 takes entropy or max, OpenVINO's (NNCF) has its own "
        "(default: entropy)",
    )


def add_precision_options(parser: argparse.ArgumentParser, title: str = "INT8 calibration") -> None:
    """What shapes an FP16 or INT8 variant: the calibration and ``--exclude``, what it keeps in float."""
    add_calibration(parser, title)
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=(),
        metavar="OP",
        help="keep more in float: op types (Gemm) or node-name regular expressions (/layer4/)",
    )
    parser.add_argument(
        "--int8-float",
        choices=INT8_FLOAT_TYPES,
        default=DEFAULT_INT8_FLOAT,
        help=f"what INT8 for TensorRT runs its unquantized ops in (default: {DEFAULT_INT8_FLOAT}; LayerNorm, "
        "softmax and reductions stay fp32)",
    )


def add_output(parser: argparse.ArgumentParser, what: str, default: Path | None = None) -> None:
    """``-o/--output``: where the tool writes; required when there is no default."""
    told = f" (default: {default}/)" if default is not None else ""
    parser.add_argument(
        "-o", "--output", type=Path, default=default, required=default is None, metavar="PATH", help=what + told
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# ---------------------------------------------------------------- the boundary and the launchers


def _command_of(main: Callable[..., int]) -> tuple[str, tuple[str, ...]]:
    target = f"{main.__module__}:{main.__name__}"
    for name, command in COMMANDS.items():
        if command.target == target:
            return command.said_as or name, command.extras
    return main.__module__, ()


def os_error_line(error: OSError) -> str:
    """An OSError as one line naming the path (a disk full, a read-only folder, a path that is a folder)."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
    if not paths:
        return reason
    return f"{' -> '.join(paths)}: {reason}"


def _guarded(call: Callable[[], int], user: str, extras: Sequence[str]) -> int:
    """Run ``call`` inside the boundary: user errors become one ``error:`` line and exit code 2, Ctrl-C exit 130.

    User errors are PoetError, an OSError (a full disk, a read-only folder: the machine's state, not a bug)
    and a module that an extra would bring (install that extra); any other exception is a bug and keeps its
    traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return call()
    except PoetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        line = missing_extra(error, user, extras)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_cli(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """A tool's ``main(argv)`` inside the boundary, as its tests and ``python -m`` call it."""
    name, extras = _command_of(main)

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        return _guarded(lambda: main(argv), name, extras)

    return wrapper


def launch(name: str, argv: Sequence[str] | None = None) -> int:
    """Check command ``name``'s extras (except for ``--help``), then import and run it inside the boundary."""
    command = COMMANDS[name]
    module, function = command.target.split(":")
    arguments = sys.argv[1:] if argv is None else list(argv)
    user = command.said_as or name

    def start() -> int:
        if not {"-h", "--help"} & set(arguments):
            check_installed(command.extras, user)
        return int(getattr(importlib.import_module(module), function)(arguments))

    return _guarded(start, user, command.extras)


# The console scripts of pyproject.toml.
poet = functools.partial(launch, "poet")
poet_run = functools.partial(launch, "poet-run")
poet_synth = functools.partial(launch, "poet-synth")
poet_eval = functools.partial(launch, "poet-eval")
poet_predict = functools.partial(launch, "poet-predict")
poet_train = functools.partial(launch, "poet-train")
poet_export = functools.partial(launch, "poet-export")
poet_build_engine = functools.partial(launch, "poet-build-engine")
poet_bench = functools.partial(launch, "poet-bench")
poet_serve = functools.partial(launch, "poet-serve")
