"""Training throughput of POET (default POET-R50 at 512x512, batch 2) and where each step's time goes.

Prints images/s and the share of each step spent in data loading, forward, Hungarian matching plus
loss, and backward plus optimizer step, measured by the real ``poet-train`` loop on synthetic
people. Run: ``python benchmarks/scripts/train_throughput.py [--steps N] [--device cuda] [--amp]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from poet.synthetic import generate_dataset
from poet.train.config import TrainConfig
from poet.train.loop import Trainer


def measure(
    steps: int, input_size: int, batch_size: int, device: str, amp: bool, backbone: str, work_dir: Path
) -> dict[str, float]:
    data = work_dir / "data"
    generate_dataset(
        data, steps * batch_size + batch_size, split="train2017", image_size=(input_size, input_size), progress=False
    )
    config = TrainConfig(
        data=str(data),
        input_size=[input_size, input_size],
        backbone=backbone,
        num_queries=25,
        batch_size=batch_size,
        epochs=1,
        max_steps_per_epoch=steps + 1,
        eval_every=0,
        num_workers=1,
        output_dir=str(work_dir / "run"),
        device=device,
        amp=amp,
        tensorboard=False,
        progress=True,
    )
    trainer = Trainer(config)
    trainer.config.max_steps_per_epoch = 1  # warm-up step: allocator, autotuning, first data batch
    trainer.train_one_epoch(0)
    trainer.config.max_steps_per_epoch = steps
    started = time.perf_counter()
    stats = trainer.train_one_epoch(1)
    elapsed = time.perf_counter() - started
    shares = {k: v / elapsed for k, v in stats.seconds.items()}
    return {"images_per_second": stats.images / elapsed, "seconds_per_step": elapsed / stats.steps, **shares}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up step (default: 10)")
    parser.add_argument("--input-size", type=int, default=512, help="square input size (default: 512)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (default: 2)")
    parser.add_argument("--backbone", default="resnet50", help="ResNet backbone (default: resnet50)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work_dir:
        result = measure(
            args.steps, args.input_size, args.batch_size, args.device, args.amp, args.backbone, Path(work_dir)
        )
    where = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"POET-{args.backbone} {args.input_size}x{args.input_size}, batch {args.batch_size}, {where}, amp={args.amp}")
    print(f"  {result['images_per_second']:.2f} images/s, {result['seconds_per_step']:.2f} s/step")
    for stage in ("data", "forward", "matching_and_loss", "backward_and_step"):
        print(f"  {stage:<18} {100 * result.get(stage, 0.0):5.1f}% of step time")


if __name__ == "__main__":
    main()
