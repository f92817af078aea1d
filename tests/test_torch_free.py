"""The runtime's share of the library must work where torch, scipy and pycocotools are missing (the base install)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = """
import sys

BLOCKED = ("torch", "torchvision", "scipy", "pycocotools", "onnx", "matplotlib")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which no optional extra's modules can be imported."""
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_torch_free_modules_run_without_torch_scipy_or_pycocotools(coco):
    image_path = sorted((coco / "val2017").glob("*.jpg"))[0]
    result = run_without_extras(
        f"""
        import numpy as np
        import poet, poet.runtime, poet.runtime.cli, poet.processing, poet.images, poet.drawing, poet.evaluation
        import poet.skeleton, poet.console, poet.cli, poet.runtime.tracking, poet.runtime.smoothing
        from poet.images import read_image
        from poet.processing import PreprocessConfig, decode_poses, preprocess

        image = read_image({str(image_path)!r})
        batch, mask, boxes = preprocess([image], PreprocessConfig())
        poses = decode_poses(np.tile([0.0, 1.0, 0.0], (5, 1)), np.full((5, 53), 0.5), image.shape[:2])
        assert not set(BLOCKED) & set(sys.modules), sorted(set(BLOCKED) & set(sys.modules))
        print("ok", batch.shape, len(poses))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok (1, 3, 512, 512) 5")


@pytest.mark.parametrize(
    ("name", "extra"),
    [("load_model", "model"), ("Predictor", "model"), ("POET", "model"), ("SetCriterion", "train")],
)
def test_a_name_whose_extra_is_missing_raises_one_line_naming_the_extra(name, extra):
    result = run_without_extras(
        f"""
        import poet
        from poet.errors import MissingExtraError
        try:
            poet.{name}
        except MissingExtraError as error:
            assert isinstance(error, ImportError)
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"poet.{name} needs the ") and f"pip install 'poet-edge[{extra}]'" in result.stdout


@pytest.mark.parametrize(
    ("command", "argv", "extra"),
    [
        ("poet-train", ["--epochs", "1"], "train"),
        ("poet-eval", ["model.pth", "--data", "coco"], "model"),
        ("poet-predict", ["photo.jpg", "--checkpoint", "model.pth"], "model"),
        ("poet-export", ["model.pth", "-o", "model.onnx"], "optimize"),
        ("poet-bench", ["--checkpoint", "model.pth", "--data", "coco"], "bench"),
        ("poet", ["quickstart"], "train,bench"),
    ],
)
def test_a_command_whose_extra_is_missing_prints_one_line_naming_it(command, argv, extra):
    result = run_without_extras(
        f"""
        from poet.console import launch
        raise SystemExit(launch({command!r}, {argv!r}))
        """
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"pip install 'poet-edge[{extra}]'" in lines[0] and "is not installed" in lines[0]
