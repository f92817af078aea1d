"""Training images/s of POET (default POET-R50 at 512x512, batch 2) for each precision and memory layout, in turns.

Every setting gets its own trainer (same seed, same weights, same synthetic people) through the real
``poet-train`` loop; after one warm-up step each, rounds of ``--steps`` steps run setting after setting,
so a CPU whose speed drifts over minutes slows them all alike. Prints each setting's median images/s,
its median ratio to float32 over the rounds, and where its step time goes (data, forward, Hungarian
matching plus loss, backward plus optimizer step). On CUDA it also counts the host's waits for the GPU per
step, in one more epoch under torch's sync debug mode.

Run: ``python benchmarks/scripts/train_throughput.py [--settings fp32 amp+channels-last] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from poet.synthetic import generate_dataset
from poet.train.config import TrainConfig
from poet.train.loop import Trainer

# Setting name -> the poet-train options it sets.
SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {"amp": False, "channels_last": False},
    "channels-last": {"amp": False, "channels_last": True},
    "amp": {"amp": True, "channels_last": False},
    "amp+channels-last": {"amp": True, "channels_last": True},
}

STAGES = ("data", "forward", "matching_and_loss", "backward_and_step")


def build_trainer(
    setting: str, data: Path, input_size: int, batch_size: int, device: str, backbone: str, work_dir: Path
) -> Trainer:
    config = TrainConfig(
        data=str(data),
        input_size=[input_size, input_size],
        backbone=backbone,
        num_queries=25,
        batch_size=batch_size,
        epochs=1,
        max_steps_per_epoch=1,
        eval_every=0,
        # Loading in the main process: a worker would be forked at every round's epoch, and the copy-on-write
        # page faults that follow a fork cost the parent seconds of kernel time, far more than a round's
        # loading, where a real epoch of thousands of steps pays them once.
        num_workers=0,
        output_dir=str(work_dir / setting),
        device=device,
        tensorboard=False,
        progress=False,
        **SETTINGS[setting],
    )
    return Trainer(config)


def run_steps(trainer: Trainer, steps: int, epoch: int) -> tuple[float, dict[str, float]]:
    """(images/s, seconds by stage) of ``steps`` training steps."""
    trainer.config.max_steps_per_epoch = steps
    started = time.perf_counter()
    stats = trainer.train_one_epoch(epoch)
    return stats.images / (time.perf_counter() - started), dict(stats.seconds)


def host_syncs_per_step(trainer: Trainer, steps: int, epoch: int) -> float:
    """Synchronizing CUDA calls per step (``.item()``, a copy to the host, ...), as torch's sync debug mode
    reports them, over one epoch of ``steps`` steps; the epoch's own bookkeeping is included."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_steps(trainer, steps, epoch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("called a synchronizing" in str(warning.message) for warning in caught) / steps


def measure(
    settings: Sequence[str],
    rounds: int,
    steps: int,
    input_size: int,
    batch_size: int,
    device: str,
    backbone: str,
    work_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Per setting: median images/s, median ratio to the first setting per round, autocast dtype, stage shares
    and, on CUDA, host syncs per step."""
    data = work_dir / "data"
    generate_dataset(
        data, (steps + 1) * batch_size, split="train2017", image_size=(input_size, input_size), progress=False
    )
    trainers = {
        name: build_trainer(name, data, input_size, batch_size, device, backbone, work_dir) for name in settings
    }
    for trainer in trainers.values():
        run_steps(trainer, 1, 0)  # warm-up: allocator, oneDNN/cuDNN kernel choice, the first batch
    speeds: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for round_index in range(rounds):
        for name, trainer in trainers.items():
            images_per_second, stages = run_steps(trainer, steps, round_index + 1)
            speeds[name].append(images_per_second)
            for stage, value in stages.items():
                seconds[name][stage] += value
    baseline = speeds[settings[0]]
    results = {}
    for name in settings:
        total = sum(seconds[name].values())
        results[name] = {
            "images_per_second": statistics.median(speeds[name]),
            "ratio": statistics.median(s / b for s, b in zip(speeds[name], baseline, strict=True)),
            "precision": trainers[name].precision.name,
            "shares": {stage: value / total for stage, value in seconds[name].items()},
        }
        if trainers[name].device.type == "cuda":
            results[name]["host_syncs_per_step"] = host_syncs_per_step(trainers[name], steps, rounds + 1)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        default=list(SETTINGS),
        help="settings to time; ratios are to the first (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every setting in turn (default: 3)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting and round (default: 4)")
    parser.add_argument("--input-size", type=int, default=512, help="square input size (default: 512)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (default: 2)")
    parser.add_argument("--backbone", default="resnet50", help="ResNet backbone (default: resnet50)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work_dir:
        results = measure(
            args.settings,
            args.rounds,
            args.steps,
            args.input_size,
            args.batch_size,
            args.device,
            args.backbone,
            Path(work_dir),
        )
    where = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"POET-{args.backbone} {args.input_size}x{args.input_size}, batch {args.batch_size}, {where}")
    print(f"{args.rounds} rounds x {args.steps} steps in turns; ratio: median per round against {args.settings[0]}")
    print("| setting | autocast | images/s | ratio | data | forward | matching+loss | backward+step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        shares = " | ".join(f"{100 * row['shares'].get(stage, 0.0):.0f}%" for stage in STAGES)
        print(f"| {name} | {row['precision']} | {row['images_per_second']:.2f} | {row['ratio']:.2f}x | {shares} |")
    for name, row in results.items():
        if "host_syncs_per_step" in row:
            print(f"{name}: {row['host_syncs_per_step']:.1f} host syncs per step")


if __name__ == "__main__":
    main()
