"""Which optional extra brings which import, so a missing one is one line naming what to install (stdlib only).

The base install is the runtime's footprint (numpy, OpenCV, ONNX Runtime, tqdm); everything else comes with an
extra of ``pyproject.toml``. This table says, per extra, the top-level modules it makes importable (its own and
those of the extras it includes), so an import error can be turned into ``pip install 'poet-edge[EXTRA]'``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from poet.errors import MissingExtraError

_MODEL = ("torch", "torchvision", "pycocotools")
_OPTIMIZE = (
    *_MODEL,
    *("onnx", "onnxslim", "modelopt", "onnx_graphsurgeon", "onnxconverter_common", "onnxscript", "polygraphy"),
    *("lief", "nncf"),
)
# extra -> (what it is called in messages, the top-level modules it brings)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("model", _MODEL),
    "train": ("training", (*_MODEL, "scipy", "yaml", "tensorboard")),
    "optimize": ("optimisation", _OPTIMIZE),
    "bench": ("benchmark", (*_OPTIMIZE, "matplotlib")),
    "tensorrt": ("TensorRT", ("tensorrt", "cuda", "onnx")),
    "openvino": ("OpenVINO", ("openvino",)),
    "client": ("Triton client", ("tritonclient",)),
    "serve": ("Triton server", ("pytriton", "tritonclient")),
}


def install_line(extras: Sequence[str]) -> str:
    return f"pip install 'poet-edge[{','.join(extras)}]'"


def _needs(user: str, extras: Sequence[str]) -> str:
    names = [EXTRAS[extra][0] for extra in extras]
    which = names[0] if len(names) == 1 else " and ".join([", ".join(names[:-1]), names[-1]])
    return f"{user} needs the {which} extra{'s' if len(names) > 1 else ''}: {install_line(extras)}"


def missing_extra(error: ModuleNotFoundError, user: str, extras: Sequence[str] = ()) -> MissingExtraError | None:
    """The one-line error for ``error`` when an extra brings the missing module, else None (a real bug).

    ``user`` is the command or name that needed it and ``extras`` the ones it is documented to need; when none
    of those brings the module, the smallest extra that does is named instead.
    """
    module = (error.name or "").split(".")[0]
    providers = [extra for extra, (_, modules) in EXTRAS.items() if module in modules]
    if not providers:
        return None
    needed = list(extras) if any(extra in providers for extra in extras) else providers[:1]
    return MissingExtraError(f"{_needs(user, needed)} ({module} is not installed)")


def check_installed(extras: Sequence[str], user: str) -> None:
    """Raise the one-line error before any work when a module of ``extras`` is not installed.

    TensorRT is left to its own loader (``poet.runtime.compat``), which also says which version it found.
    """
    for extra in extras:
        if extra == "tensorrt":
            continue
        for module in EXTRAS[extra][1]:
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(f"{_needs(user, extras)} ({module} is not installed)")
