"""The command-line tools: one table of them, their launchers, and the one error boundary (stdlib only).

Every console script of ``pyproject.toml`` points at a launcher here, which imports the tool's module inside
the boundary: on an install without the tool's extra, the user gets one line naming the extra to install
instead of a ModuleNotFoundError traceback, whether the import fails at start-up or later inside the tool.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from poet.errors import PoetError
from poet.extras import check_installed, missing_extra


@dataclass(frozen=True)
class Command:
    target: str  # "module:function" of the tool's main(argv) -> exit code
    extras: tuple[str, ...]  # the extras it needs beyond the base install
    summary: str
    said_as: str = ""  # how errors name it, when not by its own name


COMMANDS: dict[str, Command] = {
    "poet": Command("poet.cli:main", ("train", "bench"), "the whole pipeline on synthetic people", "poet quickstart"),
    "poet-run": Command("poet.runtime.cli:main", (), "poses from an exported model on images, videos, cameras"),
    "poet-synth": Command("poet.data.synthetic:main", (), "synthetic people in COCO's layout"),
    "poet-eval": Command("poet.cli:eval_main", ("model",), "OKS AP/AR of a checkpoint on a COCO dataset"),
    "poet-predict": Command("poet.cli:predict_main", ("model",), "poses drawn by a checkpoint (PyTorch)"),
    "poet-train": Command("poet.train.cli:main", ("train",), "train or fine-tune POET"),
    "poet-export": Command("poet.optimize.cli:main", ("optimize",), "ONNX export with FP16 and INT8 variants"),
    "poet-build-engine": Command("poet.optimize.build_cli:main", ("tensorrt",), "TensorRT engine from an ONNX"),
    "poet-bench": Command("poet.benchmarks.bench:main", ("bench",), "latency beside OKS AP for every variant"),
}


def _command_of(main: Callable[..., int]) -> tuple[str, tuple[str, ...]]:
    target = f"{main.__module__}:{main.__name__}"
    for name, command in COMMANDS.items():
        if command.target == target:
            return command.said_as or name, command.extras
    return main.__module__, ()


def run_cli(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Turn user errors into one ``error:`` line and exit code 2, Ctrl-C into exit code 130.

    A module that an extra would bring counts as a user error (install that extra); any other exception is
    a bug and keeps its traceback.
    """
    name, extras = _command_of(main)

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        try:
            return main(argv)
        except PoetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as error:
            line = missing_extra(error, name, extras)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def launch(name: str, argv: Sequence[str] | None = None) -> int:
    """Check command ``name``'s extras (except for ``--help``), import its module inside the boundary, run it."""
    command = COMMANDS[name]
    user = command.said_as or name
    module, function = command.target.split(":")
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        if not {"-h", "--help"} & set(arguments):
            check_installed(command.extras, user)
        main = getattr(importlib.import_module(module), function)
    except PoetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        line = missing_extra(error, user, command.extras)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    return int(main(arguments))


def poet() -> int:
    return launch("poet")


def poet_run() -> int:
    return launch("poet-run")


def poet_synth() -> int:
    return launch("poet-synth")


def poet_eval() -> int:
    return launch("poet-eval")


def poet_predict() -> int:
    return launch("poet-predict")


def poet_train() -> int:
    return launch("poet-train")


def poet_export() -> int:
    return launch("poet-export")


def poet_build_engine() -> int:
    return launch("poet-build-engine")


def poet_bench() -> int:
    return launch("poet-bench")
