"""``poet-train``: train or fine-tune POET; under torchrun each process runs this same entry point."""

from __future__ import annotations

from collections.abc import Sequence

from poet.console import run_cli


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    from poet.train.config import parse_config
    from poet.train.loop import Trainer

    config = parse_config(list(argv) if argv is not None else None)
    history = Trainer(config).fit()
    if history and "val_AP" in history[-1]:
        print(f"final val AP {history[-1]['val_AP']:.3f} ({config.output_dir}/metrics.csv)")
    return 0
