"""Tracking and smoothing on synthetic videos with true identities: MOTA, IDF1, ID switches, keypoint jitter and error.

Runs a poet-edge model (ONNX through ``PoseEstimator``, at the tracker's low threshold) over ``poet-synth --videos``
sequences once, then scores, on those detections, ``PoseTracker`` against the baseline of ids given by detection
order (a frame's poses numbered 1, 2, ... best first, as a tracker-less app would label them). A detection matches
a true person at OKS >= 0.5 (COCO's keypoint similarity, the true box's area as its scale). MOTA, IDF1 and ID
switches come from py-motmetrics. On the people the tracker follows (matched to one track for three frames running)
it measures keypoint jitter, the mean |second difference| of x and y over time (px per frame²; the truth's own,
from walking, is shown too), and the mean keypoint error to the truth (px), raw and One-Euro smoothed; ``--tune``
does so over a grid of (min_cutoff, beta). Identities never depend on smoothing: the tracker matches raw keypoints.
Run: ``python benchmarks/scripts/tracking.py [--model runs/quickstart/variants/model.onnx] [--videos DIR] [--tune]``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import motmetrics as mm
import numpy as np

from poet.images import read_image
from poet.processing import Pose
from poet.runtime import PoseEstimator
from poet.runtime.smoothing import BETA, MIN_CUTOFF
from poet.runtime.tracking import LOW_THRESHOLD, PoseTracker, assign, keypoint_similarity
from poet.synthetic import generate_videos

MATCH_OKS = 0.5
DEFAULT_MODEL = Path("runs/quickstart/variants/model.onnx")
# The videos the quickstart model can see: people at least half the image tall, as in its 128x128 training images;
# larger videos are letterboxed down to its input, so their keypoints carry the same noise in more pixels.
VIDEO_SIZES = (128, 512)
VIDEO_MIN_HEIGHT = 0.5
VIDEO_MAX_PEOPLE = 3
MIN_CUTOFFS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
BETAS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)

# One frame's people: id -> (17, 3) keypoints; for the truth also id -> box area.
People = dict[int, np.ndarray]


@dataclass
class Video:
    """One video: its frame rate, frames and per-frame truth (keypoints with COCO's v flags, box areas)."""

    name: str
    fps: float
    frames: list[np.ndarray]
    truth: list[People]
    areas: list[dict[int, float]]


def load_sequence(folder: Path) -> Video:
    """A video of ``poet-synth --videos`` (MOT's layout) with its ground truth."""
    info = configparser.ConfigParser()
    info.read(folder / "seqinfo.ini")
    length = int(info["Sequence"]["seqLength"])
    frames = [read_image(folder / "img1" / f"{index:06d}.jpg") for index in range(1, length + 1)]
    keypoints = json.loads((folder / "gt" / "keypoints.json").read_text())["frames"]
    truth = [{int(pid): np.asarray(k, dtype=np.float64) for pid, k in people.items()} for people in keypoints]
    areas: list[dict[int, float]] = [{} for _ in range(length)]
    for row in np.loadtxt(folder / "gt" / "gt.txt", delimiter=",", ndmin=2):
        areas[int(row[0]) - 1][int(row[1])] = float(row[4] * row[5])
    return Video(folder.name, float(info["Sequence"]["frameRate"]), frames, truth, areas)


def similarity(poses: Sequence[np.ndarray], truth: People, areas: dict[int, float]) -> np.ndarray:
    """OKS of every pose (rows) against every true person (columns, in ``truth``'s order) on their labelled joints."""
    if not poses or not truth:
        return np.zeros((len(poses), len(truth)))
    found = np.stack(poses).copy()
    found[:, :, 2] = 1.0  # COCO's OKS ignores the predicted scores
    return keypoint_similarity(found, np.stack(list(truth.values())), np.array([areas[i] for i in truth]), 0.5)


def mot_scores(sequences: Sequence[Video], hypotheses: Sequence[list[list[Pose]]]) -> dict[str, float]:
    """MOTA, IDF1, ID switches (and per 1,000 frames), misses and false positives over all sequences."""
    accumulators = []
    for sequence, frames in zip(sequences, hypotheses, strict=True):
        accumulator = mm.MOTAccumulator(auto_id=True)
        for poses, truth, areas in zip(frames, sequence.truth, sequence.areas, strict=True):
            oks = similarity([pose.keypoints for pose in poses], truth, areas)
            distance = np.where(oks >= MATCH_OKS, 1.0 - oks, np.nan).T
            accumulator.update(list(truth), [pose.track_id for pose in poses], distance)
        accumulators.append(accumulator)
    metrics = ["num_frames", "mota", "idf1", "num_switches", "num_misses", "num_false_positives"]
    table = mm.metrics.create().compute_many(accumulators, metrics=metrics, generate_overall=True)
    overall = {name: float(table.loc["OVERALL", name]) for name in metrics}
    overall["switches_per_1000"] = 1000.0 * overall["num_switches"] / overall["num_frames"]
    return overall


def track(
    detections: list[list[Pose]],
    fps: float,
    threshold: float,
    smooth: bool = True,
    min_cutoff: float = MIN_CUTOFF,
    beta: float = BETA,
) -> list[list[Pose]]:
    """``PoseTracker`` as ``poet-run --track --score-threshold threshold`` sets it up, over one video."""
    tracker = PoseTracker(
        threshold, min(threshold, LOW_THRESHOLD), fps=fps, smooth=smooth, min_cutoff=min_cutoff, beta=beta
    )
    return [tracker.update(poses) for poses in detections]


def by_detection_order(detections: list[list[Pose]], threshold: float) -> list[list[Pose]]:
    """The baseline: each frame's poses from ``threshold`` up, numbered 1, 2, ... in the model's order (best first)."""
    kept = [[pose for pose in poses if pose.score >= threshold] for poses in detections]
    return [[Pose(p.keypoints, p.score, p.box, rank + 1) for rank, p in enumerate(poses)] for poses in kept]


@dataclass
class Followed:
    """Where the tracker followed a true person: ``matches`` (video, frame, pose index, true id), and ``runs`` of
    three frames on one track (video, true id, first frame, the three pose indices) for the jitter."""

    matches: list[tuple[int, int, int, int]]
    runs: list[tuple[int, int, int, int, int, int]]


def follow(videos: Sequence[Video], tracked: Sequence[list[list[Pose]]]) -> Followed:
    """Match each frame's tracked poses to the truth (optimal, OKS >= 0.5) and find three-frame runs on one track."""
    followed = Followed([], [])
    for v, (video, frames) in enumerate(zip(videos, tracked, strict=True)):
        recent: dict[int, list[tuple[int, int, int | None]]] = {}  # true id -> its last (frame, pose index, track)
        for f, (poses, truth, areas) in enumerate(zip(frames, video.truth, video.areas, strict=True)):
            ids = list(truth)
            for row, column in assign(similarity([p.keypoints for p in poses], truth, areas), MATCH_OKS):
                person = ids[column]
                followed.matches.append((v, f, row, person))
                run = [*recent.get(person, []), (f, row, poses[row].track_id)]
                recent[person] = run[-2:]
                if len(run) == 3 and [r[0] for r in run] == [f - 2, f - 1, f] and len({r[2] for r in run}) == 1:
                    followed.runs.append((v, person, f - 2, run[0][1], run[1][1], row))
    return followed


def keypoint_figures(
    videos: Sequence[Video], tracked: Sequence[list[list[Pose]]], followed: Followed
) -> dict[str, float]:
    """Mean keypoint error to the truth (px) and jitter (mean |second difference| of x and y, px/frame²) of
    ``tracked`` where ``followed`` found the true people, on the joints the truth labels."""
    errors = []
    for v, f, index, person in followed.matches:
        truth = videos[v].truth[f][person]
        labelled = truth[:, 2] > 0
        errors.append(np.linalg.norm(tracked[v][f][index].keypoints[labelled, :2] - truth[labelled, :2], axis=1))
    jitter, truth_jitter = [], []
    for v, person, first, *indices in followed.runs:
        truths = [videos[v].truth[first + k][person] for k in range(3)]
        labelled = np.all([t[:, 2] > 0 for t in truths], axis=0)
        points = [tracked[v][first + k][i].keypoints[labelled, :2] for k, i in enumerate(indices)]
        true_points = [t[labelled, :2] for t in truths]
        jitter.append(np.abs(points[2] - 2 * points[1] + points[0]).ravel())
        truth_jitter.append(np.abs(true_points[2] - 2 * true_points[1] + true_points[0]).ravel())
    return {"error": _mean(errors), "jitter": _mean(jitter), "truth_jitter": _mean(truth_jitter)}


def _mean(parts: list[np.ndarray]) -> float:
    """The mean of all values; NaN when there are none (a model that finds nobody)."""
    return float(np.concatenate(parts).mean()) if parts else float("nan")


def detect(model: Path, videos: Sequence[Video]) -> list[list[list[Pose]]]:
    """Every frame's poses down to the tracker's low threshold, as ``poet-run --track`` has the model find them."""
    estimator = PoseEstimator(model, score_threshold=LOW_THRESHOLD)
    return [estimator.predict_arrays(video.frames) for video in videos]


def tune(
    videos: Sequence[Video], detections: Sequence[list[list[Pose]]], threshold: float, followed: Followed
) -> list[tuple[float, float, dict[str, float]]]:
    """Jitter and error of the smoothed keypoints for every (min_cutoff, beta) of the grid."""
    grid = []
    for min_cutoff in MIN_CUTOFFS:
        for beta in BETAS:
            smoothed = [
                track(d, video.fps, threshold, min_cutoff=min_cutoff, beta=beta)
                for d, video in zip(detections, videos, strict=True)
            ]
            grid.append((min_cutoff, beta, keypoint_figures(videos, smoothed, followed)))
    return grid


@dataclass
class SizeFigures:
    """What one video size gave: MOT scores per id row, keypoint figures raw and smoothed, and the tuning grid."""

    size: int
    frames: int
    people: int
    mot: dict[str, dict[str, float]]
    matched: int
    runs: int
    raw: dict[str, float]
    smoothed: dict[str, float]
    grid: list[tuple[float, float, dict[str, float]]]


def measure(model: Path, folder: Path, size: int, args: argparse.Namespace) -> SizeFigures:
    """Every figure on ``args.count`` videos of ``size`` x ``size`` (made into ``folder`` unless ``--videos``)."""
    if args.videos is None:
        generate_videos(
            folder,
            args.count,
            args.frames,
            image_size=(size, size),
            max_people=VIDEO_MAX_PEOPLE,
            min_height=VIDEO_MIN_HEIGHT,
            seed=args.seed,
            progress=False,
        )
    else:
        folder = args.videos
    videos = [load_sequence(path) for path in sorted(folder.iterdir()) if (path / "seqinfo.ini").is_file()]
    detections = detect(model, videos)
    threshold = args.score_threshold
    fps = [video.fps for video in videos]
    raw = [track(d, rate, threshold, smooth=False) for d, rate in zip(detections, fps, strict=True)]
    smooth = [track(d, rate, threshold) for d, rate in zip(detections, fps, strict=True)]
    rows = {
        f"PoseTracker, output from {threshold:g} (poet-run --track)": [
            [[p for p in f if p.score >= threshold] for f in v] for v in smooth
        ],
        f"PoseTracker, every tracked pose (down to {min(threshold, LOW_THRESHOLD):g})": smooth,
        "ids by detection order": [by_detection_order(d, threshold) for d in detections],
    }
    followed = follow(videos, raw)
    return SizeFigures(
        size=size or videos[0].frames[0].shape[1],
        frames=sum(len(video.frames) for video in videos),
        people=len({(v, i) for v, video in enumerate(videos) for truth in video.truth for i in truth}),
        mot={name: mot_scores(videos, hypotheses) for name, hypotheses in rows.items()},
        matched=len(followed.matches),
        runs=len(followed.runs),
        raw=keypoint_figures(videos, raw, followed),
        smoothed=keypoint_figures(videos, smooth, followed),
        grid=tune(videos, detections, threshold, followed) if args.tune else [],
    )


def print_size(figures: SizeFigures) -> None:
    size = figures.size
    print(f"\n### {size}x{size}: {figures.frames} frames, {figures.people} people\n")
    print("| ids | MOTA | IDF1 | ID switches | per 1,000 frames | misses | false positives |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in figures.mot.items():
        print(
            f"| {name} | {m['mota']:.3f} | {m['idf1']:.3f} | {m['num_switches']:.0f} | {m['switches_per_1000']:.1f} "
            f"| {m['num_misses']:.0f} | {m['num_false_positives']:.0f} |"
        )
    raw, smoothed = figures.raw, figures.smoothed
    print(
        f"\nkeypoints of {figures.matched} matched poses, jitter over {figures.runs} three-frame runs "
        f"(the truth's own jitter, from walking: {raw['truth_jitter']:.3f} px/frame²)\n"
    )
    print("| keypoints | jitter px/frame² | error px | jitter / raw | error / raw |\n|---|---:|---:|---:|---:|")
    print(f"| raw | {raw['jitter']:.3f} | {raw['error']:.3f} | 1.00 | 1.000 |")
    print(
        f"| One-Euro (min_cutoff {MIN_CUTOFF:g}, beta {BETA:g}) | {smoothed['jitter']:.3f} | {smoothed['error']:.3f} "
        f"| {smoothed['jitter'] / raw['jitter']:.2f} | {smoothed['error'] / raw['error']:.3f} |"
    )
    if figures.grid:
        print("\n| min_cutoff \\ beta | " + " | ".join(f"{beta:g}" for beta in BETAS) + " |")
        print("|---|" + "---:|" * len(BETAS))
        for min_cutoff in MIN_CUTOFFS:
            cells = [
                f"{g['jitter'] / raw['jitter']:.2f} / {g['error'] / raw['error']:.3f}"
                for m, _, g in figures.grid
                if m == min_cutoff
            ]
            print(f"| {min_cutoff:g} | " + " | ".join(cells) + " |")
        print("(jitter / raw jitter, error / raw error)")


def print_choice(sizes: Sequence[SizeFigures]) -> None:
    """The settings that hold at every size: the least worst-case jitter with the error at most raw's everywhere."""
    worst = []
    for index, (min_cutoff, beta, _) in enumerate(sizes[0].grid):
        jitter = max(s.grid[index][2]["jitter"] / s.raw["jitter"] for s in sizes)
        error = max(s.grid[index][2]["error"] / s.raw["error"] for s in sizes)
        worst.append((min_cutoff, beta, jitter, error))
    print("\nover every size, worst case (jitter / raw, error / raw):")
    kept = [entry for entry in worst if entry[3] <= 1.0]
    choices = {"least error": min(worst, key=lambda entry: entry[3])}
    if kept:
        choices["least jitter, error at most raw's"] = min(kept, key=lambda entry: entry[2])
    target = [entry for entry in kept if entry[2] <= 0.5]
    choices["jitter at most half of raw's, least error"] = min(
        [entry for entry in worst if entry[2] <= 0.5] or worst, key=lambda entry: entry[3]
    )
    for what, (min_cutoff, beta, jitter, error) in choices.items():
        print(f"{what}: min_cutoff {min_cutoff:g}, beta {beta:g}: {jitter:.2f} / {error:.3f}")
    print(f"settings reaching both targets (jitter <= 0.5 raw, error <= raw) at every size: {len(target)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"poet-edge model (default: {DEFAULT_MODEL})")
    parser.add_argument("--videos", type=Path, help="poet-synth --videos folder (default: made here, see --count)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(VIDEO_SIZES),
        metavar="PX",
        help="side of the square videos made, one run each (default: %(default)s): the same people at every "
        "size, so the smoothing's defaults can be seen to hold at each",
    )
    parser.add_argument("--count", type=int, default=8, help="videos to make without --videos (default: 8)")
    parser.add_argument("--frames", type=int, default=300, help="frames per video made (default: 300, 10 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the videos made (default: 0)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="poet-run's --score-threshold (default: 0.5)"
    )
    parser.add_argument("--tune", action="store_true", help="also smooth with every (min_cutoff, beta) of the grid")
    args = parser.parse_args(argv)
    threshold = args.score_threshold
    print(
        f"{args.model} on {args.count} synthetic videos of {args.frames} frames a size (seed {args.seed}); "
        f"--score-threshold {threshold:g}, model run down to {min(threshold, LOW_THRESHOLD):g}; match at OKS >= "
        f"{MATCH_OKS:g}"
    )
    sizes = []
    for size in [0] if args.videos is not None else args.sizes:
        with tempfile.TemporaryDirectory() as temp:
            figures = measure(args.model, Path(temp), size, args)
        print_size(figures)
        sizes.append(figures)
    if args.tune:
        print_choice(sizes)


if __name__ == "__main__":
    main()
