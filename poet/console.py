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


def _guarded(call: Callable[[], int], user: str, extras: Sequence[str]) -> int:
    """Run ``call`` inside the boundary: user errors become one ``error:`` line and exit code 2, Ctrl-C exit 130.

    A module that an extra would bring counts as a user error (install that extra); any other exception is
    a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return call()
    except PoetError as error:
        print(f"error: {error}", file=sys.stderr)
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
