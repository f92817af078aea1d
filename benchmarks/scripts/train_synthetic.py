"""Train the small synthetic-people recipe and print its OKS AP on a held-out synthetic split.

The check behind the claim that a small POET learns on a 2-core CPU in minutes: it generates the
data with ``poet-synth``, trains the bundled ``synthetic-small`` recipe with the real training
loop, and evaluates the final model on validation images it never trained on.
Run: ``python benchmarks/scripts/train_synthetic.py [--train-images N] [--epochs N] [--output DIR]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from poet.benchmarks.quickstart import RECIPE, synthesise_for_recipe
from poet.evaluation import coco_split_paths, format_table
from poet.runner import evaluate_model
from poet.train.config import parse_config
from poet.train.loop import Trainer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/bench-synthetic"), help="data and run folder")
    parser.add_argument("--train-images", type=int, default=6000, help="training images (default: 6000, as quickstart)")
    parser.add_argument("--val-images", type=int, default=200, help="held-out synthetic images (default: 200)")
    parser.add_argument("--recipe", default=RECIPE, help=f"config file or bundled recipe (default: {RECIPE})")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = args.output / "data"
    flags = ["--config", args.recipe, "--data", str(data), "--output-dir", str(args.output / "run")]
    config = parse_config([*flags, *(["--epochs", str(args.epochs)] if args.epochs else [])])
    synthesise_for_recipe(data, args.train_images, args.val_images, config.input_size)
    generated = time.perf_counter()
    trainer = Trainer(config)
    trainer.fit()
    trained = time.perf_counter()
    stats = evaluate_model(trainer.model, *coco_split_paths(data, "val2017"))
    print(format_table(stats, f"held-out synthetic people ({args.val_images} images)"))
    print(
        f"data {generated - started:.0f} s, training {trained - generated:.0f} s "
        f"({config.epochs} epochs of {args.train_images} images), evaluation {time.perf_counter() - trained:.0f} s"
    )
    print(f"held-out OKS AP {stats['AP']:.3f} (target >= 0.5)")


if __name__ == "__main__":
    main()
