"""The ``poet-bench`` report: environment, regressions against an earlier run, Markdown table and plot.

The three files are rendered into temporary files first and renamed into place together at the end,
so an interrupted run leaves the previous report whole.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from poet.fileio import atomic_path

PACKAGES = ("torch", "onnxruntime", "onnx", "numpy", "opencv-python-headless", "tensorrt")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Where and when the figures were measured: CPU, GPU, versions, threads."""
    import cv2
    import onnxruntime as ort
    import torch

    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu,
        "onnxruntime_providers": ort.get_available_providers(),
        "threads": {
            "torch": torch.get_num_threads(),
            "onnxruntime": "default (one per usable core)",
            "opencv": cv2.getNumThreads(),
        },
        "versions": versions,
    }


def _rows(report: dict[str, Any]) -> dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]]:
    """(variant, batch) -> (variant record, batch record) of the variants that ran."""
    return {
        (variant["name"], batch["batch"]): (variant, batch)
        for variant in report["variants"]
        if variant["status"] == "ok"
        for batch in variant["batches"]
    }


def compare_reports(
    old: dict[str, Any], new: dict[str, Any], max_slowdown: float, max_ap_drop: float
) -> list[dict[str, Any]]:
    """Rows of ``new`` slower (total p50) by over ``max_slowdown`` (a fraction) or lower in AP by over ``max_ap_drop``.

    AP belongs to the variant, so it is compared once, on the variant's first batch row.
    """
    old_rows = _rows(old)
    regressions: list[dict[str, Any]] = []
    for (name, batch), (variant, row) in _rows(new).items():
        if (name, batch) not in old_rows:
            continue
        old_variant, old_row = old_rows[name, batch]
        before, after = old_row["latency_ms"]["total"]["p50"], row["latency_ms"]["total"]["p50"]
        if after > before * (1 + max_slowdown):
            regressions.append(
                {
                    "variant": name,
                    "batch": batch,
                    "metric": "latency_p50_ms",
                    "old": before,
                    "new": after,
                    "message": f"{name} batch {batch}: p50 {before:.1f} -> {after:.1f} ms "
                    f"(+{100 * (after / before - 1):.0f}%, limit {100 * max_slowdown:.0f}%)",
                }
            )
        old_ap, new_ap = old_variant["accuracy"].get("AP"), variant["accuracy"].get("AP")
        first_row = batch == variant["batches"][0]["batch"]
        if first_row and old_ap is not None and new_ap is not None and new_ap < old_ap - max_ap_drop:
            regressions.append(
                {
                    "variant": name,
                    "batch": batch,
                    "metric": "AP",
                    "old": old_ap,
                    "new": new_ap,
                    "message": f"{name}: AP {old_ap:.4f} -> {new_ap:.4f} (limit -{max_ap_drop})",
                }
            )
    return regressions


def _triple(stats: dict[str, float]) -> str:
    return f"{stats['p50']:.1f} / {stats['p90']:.1f} / {stats['p99']:.1f}"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per variant and batch size, then the skipped variants and regressions."""
    env = report["environment"]
    flagged = {(r["variant"], r["batch"]) for r in report.get("compare", {}).get("regressions", [])}
    torch_p50 = {
        batch: row["latency_ms"]["total"]["p50"] for (name, batch), (_, row) in _rows(report).items() if name == "torch"
    }
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cpu_cores_usable']} usable cores"
        + (f", GPU {env['gpu']}" if env["gpu"] else ", no GPU")
        + f"); {report['data']['count']} images of {report['data']['annotations']}; "
        f"{report['settings']['iters']} timed batches per row after {report['settings']['warmup']} warm-up, "
        "variants timed in turns. Latency in ms as p50 / p90 / p99.",
        "",
        "| variant | batch | pre-process | inference | post-process | total | images/s | RSS added MiB | AP | AR "
        "| p50 vs torch |" + (" regression |" if "compare" in report else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if "compare" in report else ""),
    ]
    for (name, batch), (variant, row) in _rows(report).items():
        latency = row["latency_ms"]
        ratio = f"{latency['total']['p50'] / torch_p50[batch]:.2f}x" if batch in torch_p50 else "n/a"
        accuracy = variant["accuracy"]
        cells = [
            name,
            str(batch),
            *(_triple(latency[stage]) for stage in ("preprocess", "inference", "postprocess", "total")),
            f"{row['throughput_ips']:.1f}",
            f"{variant['memory_mib'].get('rss_added', float('nan')):.0f}",
            f"{accuracy.get('AP', float('nan')):.3f}",
            f"{accuracy.get('AR', float('nan')):.3f}",
            ratio,
        ]
        if "compare" in report:
            cells.append("**REGRESSION**" if (name, batch) in flagged else "")
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [v for v in report["variants"] if v["status"] != "ok"]
    if skipped:
        lines += ["", "Not measured:", *(f"- {v['name']} ({v['status']}): {v['reason']}" for v in skipped)]
    if "compare" in report:
        regressions = report["compare"]["regressions"]
        lines += ["", f"Compared with {report['compare']['baseline']}: {len(regressions)} regression(s)"]
        if not report["compare"]["same_data"]:
            lines.append("- note: the baseline was measured on other images, so its AP is not comparable")
        lines += [f"- {r['message']}" for r in regressions]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency (p50 total at the smallest batch) against OKS AP, one labelled point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    points = [
        (variant["name"], min(variant["batches"], key=lambda row: row["batch"]), variant["accuracy"]["AP"])
        for variant in report["variants"]
        if variant["status"] == "ok"
    ]
    # A legend rather than labels beside the points: variants of equal AP and close latency would overlap.
    markers = "osD^vP*X"
    for index, (name, row, ap) in enumerate(points):
        latency = row["latency_ms"]["total"]["p50"]
        axes.scatter([latency], [ap], s=45, marker=markers[index % len(markers)], label=name, alpha=0.85)
    # From zero on both axes, so distances read as ratios; AP gets headroom for the labels.
    axes.set_xlim(left=0)
    axes.set_ylim(0, max([0.05, *(1.15 * ap for _, _, ap in points)]))
    axes.set_xlabel(f"latency p50 per batch of {min(report['settings']['batches'])}, ms (pre + inference + post)")
    axes.set_ylabel("OKS AP")
    axes.set_title(f"{Path(report['model']).name}: latency vs accuracy")
    axes.grid(alpha=0.3)
    if points:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def write_report(report: dict[str, Any], output: Path) -> None:
    """``bench.json``, ``bench.md`` and ``bench.png`` into ``output``, each replaced only once all are rendered."""
    import json

    with contextlib.ExitStack() as stack:
        json_tmp, md_tmp, png_tmp = (
            stack.enter_context(atomic_path(output / name)) for name in ("bench.json", "bench.md", "bench.png")
        )
        plot(report, png_tmp)
        md_tmp.write_text(markdown_table(report))
        json_tmp.write_text(json.dumps(report, indent=1))
