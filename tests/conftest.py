"""Shared fixtures: real COCO photographs carried in tests/data, and small real POET models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
# The measurement scripts are files, not installed modules; tests import the functions they check from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "scripts"))
# The larger COCO subset (80 train, 79 val images) some statistical tests need; they skip without it.
COCO_MINI = os.environ.get("POET_COCO_MINI")


@pytest.fixture(scope="session")
def coco() -> Path:
    """Twelve real COCO 2017 person-keypoints photographs in COCO's layout (tests/data/README.md)."""
    return DATA / "coco"


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """Root of the larger real COCO subset named by POET_COCO_MINI; the test is skipped without it."""
    if not COCO_MINI:
        pytest.skip("needs the larger COCO subset: set POET_COCO_MINI to its root (COCO layout)")
    root = Path(COCO_MINI)
    if not (root / "annotations").is_dir():
        pytest.fail(f"POET_COCO_MINI={root} has no annotations/ folder: expected a COCO-layout root")
    return root


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a real tmpfs of a given size in KiB (a disk that fills up) and return its folder; unmounted after.

    Mounting needs root (as in CI); elsewhere the test is skipped with the reason.
    """
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("a full disk is a real tmpfs mount here, which needs root")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def coco_batch(coco: Path):
    """The first four validation photographs as one padded 128x128 training batch."""
    from poet.processing import PreprocessConfig
    from poet.train.dataset import CocoKeypoints, collate

    dataset = CocoKeypoints(
        coco / "annotations" / "person_keypoints_val2017.json",
        coco / "val2017",
        PreprocessConfig(input_size=(128, 128)),
    )
    return collate([dataset[i] for i in range(4)])


@pytest.fixture(scope="session")
def state_dict_listing() -> Path:
    """The authors' POET-R50 state-dict key/shape listing."""
    return DATA / "poet-r50-state-dict.txt"


@pytest.fixture(scope="session")
def tiny_config():
    from poet.model import PoetConfig

    return PoetConfig(
        backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=64, num_queries=6
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:
    """A small random-weight POET saved in our format, letterboxing to 128x128."""
    import torch

    from poet.checkpoint import save_checkpoint
    from poet.model import build_model
    from poet.processing import PreprocessConfig

    torch.manual_seed(0)
    model = build_model(tiny_config, PreprocessConfig(input_size=(128, 128)))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="session")
def runtime_models(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Path]:
    """``tiny_checkpoint`` exported for the runtime in its two layouts.

    ``uint8``: uint8 BGR input (normalisation in the graph), raw outputs, fixed batch of 2;
    ``float``: float32 RGB input, decoding in the graph, dynamic batch of at most 4.
    """
    from poet.optimize.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    # The runtime tests compare these models with the torch predictor, so the exporter's own check is skipped.
    options = {"verify": False, "progress": False}
    uint8 = export_onnx(tiny_checkpoint, folder / "tiny_uint8.onnx", uint8_input=True, batch=2, **options)
    decoded = export_onnx(tiny_checkpoint, folder / "tiny_float.onnx", decode=True, batch=None, max_batch=4, **options)
    return {"uint8": uint8.path, "float": decoded.path}
