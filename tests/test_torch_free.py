"""The runtime's share of the library must work where importing torch fails (Jetson apps, small images)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_torch_free_modules_run_without_torch(coco_mini):
    script = textwrap.dedent(
        f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        import poet, poet.runtime, poet.processing, poet.images, poet.drawing, poet.evaluation, poet.skeleton
        from poet.images import read_image
        from poet.processing import PreprocessConfig, decode_poses, preprocess

        image = read_image({str(sorted((coco_mini / "val2017").glob("*.jpg"))[0])!r})
        batch, mask, boxes = preprocess([image], PreprocessConfig())
        poses = decode_poses(np.tile([0.0, 1.0, 0.0], (5, 1)), np.full((5, 53), 0.5), image.shape[:2])
        try:
            poet.load_model
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")
        assert "torch" not in sys.modules
        print("ok", batch.shape, len(poses))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok (1, 3, 512, 512) 5")
