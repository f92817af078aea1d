"""Put mypy-readable TensorRT stubs in typings/ so CI type-checks our TensorRT code without TensorRT.

The ``tensorrt-stubs`` wheel cannot be used as installed: it depends on the full ``tensorrt`` package
(gigabytes of CUDA libraries), it installs a bare ``tensorrt/`` folder that shadows a missing TensorRT at
run time, and its generated ``tensorrt_bindings/tensorrt.pyi`` has a few signatures Python cannot parse
(a parameter named ``in``, a parameter without default after defaulted ones). So this script downloads
the pinned wheel without dependencies, repairs those signatures and writes the stubs to ``typings/``,
which ``[tool.mypy] mypy_path`` points at. Run it once before ``python3 -m mypy`` (``.ci/run`` does).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

STUBS_VERSION = "10.13.0.35.1"
TYPINGS = Path(__file__).resolve().parents[1] / "typings"
STAMP = TYPINGS / ".tensorrt-stubs-version"
PACKAGES = ("tensorrt/", "tensorrt_bindings/")


def split_parameters(text: str) -> list[str]:
    """Split a parameter list at top-level commas (annotations hold brackets with commas)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def repair_signature(line: str) -> str:
    """Rename keyword-named parameters and default the ones that follow a defaulted parameter."""
    match = re.match(r"^(\s*def \w+\()(.*)(\) -> .*:\s*)$", line)
    if match is None:
        return line
    head, params, tail = match.groups()
    fixed, seen_default = [], False
    for param in split_parameters(params):
        param = re.sub(r"^in:", "in_:", param)
        if "=" in param:
            seen_default = True
        elif seen_default and not param.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return head + ", ".join(fixed) + tail


def repair(text: str, name: str) -> str:
    """Repair the lines Python's parser rejects, one at a time, until the stub parses."""
    lines = text.splitlines(keepends=True)
    for _ in range(100):
        try:
            ast.parse("".join(lines), filename=name)
            return "".join(lines)
        except SyntaxError as error:
            index = (error.lineno or 1) - 1
            repaired = repair_signature(lines[index])
            if repaired == lines[index]:
                raise SystemExit(f"{name}:{error.lineno}: cannot repair stub line: {lines[index].strip()}") from None
            lines[index] = repaired
    raise SystemExit(f"{name}: too many unparsable lines")


def main() -> int:
    if STAMP.is_file() and STAMP.read_text().strip() == STUBS_VERSION:
        return 0
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", folder,
             f"tensorrt-stubs=={STUBS_VERSION}"],
            check=True,
        )  # fmt: skip
        wheel = next(Path(folder).glob("tensorrt_stubs-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(PACKAGES) and member.endswith(".pyi"):
                    target = TYPINGS / member
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(repair(archive.read(member).decode(), member))
    STAMP.write_text(STUBS_VERSION + "\n")
    print(f"TensorRT {STUBS_VERSION} stubs written to {TYPINGS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
