"""What ``pip install poet-edge`` (no extras: the runtime) installs, and its size on disk, measured here.

Walks the base requirements of the installed poet-edge and of each dependency (environment markers
evaluated, extras ignored) and sums the files each distribution's RECORD lists. PyTorch is printed
for comparison: the runtime never needs it. Run: ``python benchmarks/scripts/runtime_footprint.py``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MIB = 1024 * 1024


def base_requirements(name: str) -> list[str]:
    """Distributions ``name`` needs without extras, on this Python and platform."""
    needed = []
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            needed.append(requirement.name)
    return needed


def closure(root: str) -> list[str]:
    """``root``'s dependencies, recursively, in the order first met."""
    seen: dict[str, None] = {}
    pending = base_requirements(root)
    while pending:
        name = canonicalize_name(pending.pop(0))
        if name not in seen:
            seen[name] = None
            pending.extend(base_requirements(name))
    return list(seen)


def installed_bytes(name: str) -> int:
    """Bytes of the files a distribution installed (its RECORD), bytecode caches included when present."""
    total = 0
    for file in metadata.files(name) or []:
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    packages = closure("poet-edge")
    sizes = {name: installed_bytes(name) for name in packages}
    print(f"pip install poet-edge pulls {len(packages)} distributions:")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"  {name:<24} {metadata.version(name):<12} {size / MIB:8.1f} MiB")
    print(f"  {'total':<37} {sum(sizes.values()) / MIB:8.1f} MiB")
    try:
        torch_size = installed_bytes("torch")
    except metadata.PackageNotFoundError:
        return
    print(f"for comparison, torch {metadata.version('torch')} alone: {torch_size / MIB:.1f} MiB (not needed)")


if __name__ == "__main__":
    main()
