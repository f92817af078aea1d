"""Identities across video frames: a ByteTrack-style pose tracker on keypoint similarity, torch-free.

Each frame's poses are matched to the live tracks in two stages, as in ByteTrack (Zhang et al., 2022):
confident poses first, against every track; then the remaining tracks may be continued by low-score
poses, which are often real people seen badly (occluded, blurred) but never start a track, since most
of them are false alarms. Similarity is COCO's object keypoint similarity (OKS) between the detection
and the track's keypoints predicted at constant velocity, so two people crossing keep their identities
and a person missed for a few frames is found again where they would have walked to.

The assignment is the optimal one, from ``lap.lapjv`` (Jonker-Volgenant, as ByteTrack uses): the runtime
has no scipy, and lap is a small compiled wheel (numpy only) that solves rectangular cost matrices with a
cost limit, so pairs below the minimum similarity stay unmatched, in one call; a hand-written numpy
Hungarian would be more code to get right for no gain.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import lap
import numpy as np

from poet.processing import Pose
from poet.runtime.smoothing import (
    BETA,
    D_CUTOFF,
    MIN_CUTOFF,
    MIN_KEYPOINT_SCORE,
    KeypointSmoother,
    person_box,
    person_size,
)
from poet.skeleton import NUM_KEYPOINTS, OKS_SIGMAS

# Scores of ByteTrack's two stages: poses from HIGH_THRESHOLD up are matched first and start tracks; those from
# LOW_THRESHOLD up may only continue one (poet-run --track runs the model down to LOW_THRESHOLD for them).
HIGH_THRESHOLD = 0.5
LOW_THRESHOLD = 0.1
# COCO's OKS divides each keypoint's squared distance by 2 * area * (2 * sigma) ** 2.
_KEYPOINT_VARIANCES = (2.0 * np.asarray(OKS_SIGMAS)) ** 2


@dataclass
class _Track:
    """A person's last detected (raw) keypoints, when they were seen, and how fast the person moves (px/s)."""

    track_id: int
    keypoints: np.ndarray
    time: float
    velocity: np.ndarray
    smoother: KeypointSmoother | None
    missed: int = 0

    def predicted(self, time: float) -> np.ndarray:
        """The keypoints (scores as last seen) moved on at constant velocity to ``time``."""
        keypoints = self.keypoints.copy()
        keypoints[:, :2] += self.velocity * (time - self.time)
        return keypoints


def box_area(box: np.ndarray, keypoints: np.ndarray) -> float:
    """Area (px²) of the person's box (:func:`poet.runtime.smoothing.person_box`), at least 1."""
    x0, y0, x1, y1 = person_box(box, keypoints)
    return max(float((x1 - x0) * (y1 - y0)), 1.0)


def keypoint_similarity(
    tracks: np.ndarray, detections: np.ndarray, areas: np.ndarray, min_keypoint_score: float = MIN_KEYPOINT_SCORE
) -> np.ndarray:
    """COCO OKS of every ``(T, 17, 3)`` track against every ``(D, 17, 3)`` detection -> ``(T, D)``.

    ``areas`` ``(D,)`` sets each detection's scale. Only keypoints scored at least ``min_keypoint_score`` in
    both count, since unseen joints carry no identity; a pair with none in common has similarity 0.
    """
    distance2 = ((tracks[:, None, :, :2] - detections[None, :, :, :2]) ** 2).sum(axis=-1)
    similarity = np.exp(-distance2 / (2.0 * areas[None, :, None] * _KEYPOINT_VARIANCES))
    visible = (tracks[:, None, :, 2] >= min_keypoint_score) & (detections[None, :, :, 2] >= min_keypoint_score)
    counts = visible.sum(axis=-1)
    return np.where(counts > 0, (similarity * visible).sum(axis=-1) / np.maximum(counts, 1), 0.0)


def assign(similarity: np.ndarray, min_similarity: float) -> list[tuple[int, int]]:
    """(row, column) pairs, each of similarity at least ``min_similarity``, that maximise the sum of
    similarity minus ``min_similarity``: a pair is only made where it beats leaving both unmatched.
    """
    if similarity.size == 0:
        return []
    _, columns, _ = lap.lapjv(1.0 - similarity, extend_cost=True, cost_limit=1.0 - min_similarity)
    return [(row, int(column)) for row, column in enumerate(columns) if column >= 0]


def _checked(index: int, pose: Pose) -> tuple[Pose, bool]:
    """``pose`` as the tracker can use it, and whether any of its keypoints is finite; a ValueError naming pose
    ``index`` for what no detection can be.

    A keypoint whose x, y or score is not finite (NaN, Inf) is made unseen in this frame (0, 0 and score 0), so
    it takes no part in matching and never reaches a smoother: one bad detection cannot poison a track. A box
    that is not finite counts as none (the keypoints' box stands in).
    """
    try:
        keypoints = np.array(pose.keypoints, dtype=np.float64)
        box = np.array(pose.box, dtype=np.float64)
        score = float(pose.score)
    except (TypeError, ValueError) as error:
        raise ValueError(f"pose {index}: keypoints, box and score must be numbers ({error})") from None
    if keypoints.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(
            f"pose {index}: keypoints must have shape ({NUM_KEYPOINTS}, 3), x, y and score of each COCO keypoint; "
            f"got shape {keypoints.shape}"
        )
    if box.shape != (4,):
        raise ValueError(f"pose {index}: box must be four numbers (x0, y0, x1, y1); got shape {box.shape}")
    if not math.isfinite(score):
        raise ValueError(f"pose {index}: score must be a finite number; got {score}")
    unseen = ~np.isfinite(keypoints).all(axis=1)
    keypoints[unseen] = 0.0
    if not np.isfinite(box).all():
        box = np.zeros(4)
    return dataclasses.replace(pose, keypoints=keypoints, box=box, score=score), not unseen.all()


class PoseTracker:
    """Give each person a ``track_id`` that stays theirs across video frames, and smooth their keypoints.

    ``high_threshold``: poses scored at least this are matched first and start new tracks (ids 1, 2, ...)
    when unmatched. ``low_threshold``: poses scored between the two may only continue a track left over
    from the first stage; below it they are ignored. ``min_similarity``: the least OKS for a match.
    ``max_missed``: a track not matched for more frames than this is dropped (until then it is kept and
    predicted at constant velocity). ``fps``: frame rate assumed when ``update`` gets no timestamp.
    ``min_keypoint_score``: keypoints scored below it take no part in similarity or smoothing.
    ``smooth``: One-Euro filter each track's keypoints (``min_cutoff``, ``beta``, ``d_cutoff``: see
    :class:`poet.runtime.smoothing.OneEuroFilter`); matching always uses the raw keypoints, so smoothing
    adds no lag to association. Same input, same ids: there is no randomness anywhere.
    """

    def __init__(
        self,
        high_threshold: float = HIGH_THRESHOLD,
        low_threshold: float = LOW_THRESHOLD,
        min_similarity: float = 0.3,
        max_missed: int = 30,
        fps: float = 30.0,
        min_keypoint_score: float = MIN_KEYPOINT_SCORE,
        smooth: bool = True,
        min_cutoff: float = MIN_CUTOFF,
        beta: float = BETA,
        d_cutoff: float = D_CUTOFF,
    ) -> None:
        if not 0 <= low_threshold <= high_threshold:
            raise ValueError(f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}")
        if not 0 < min_similarity <= 1 or max_missed < 0 or fps <= 0:
            raise ValueError(
                f"need 0 < min_similarity <= 1, max_missed >= 0 and fps > 0, got {min_similarity}, {max_missed}, {fps}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.min_similarity = min_similarity
        self.max_missed = max_missed
        self.fps = fps
        self.min_keypoint_score = min_keypoint_score
        self._new_smoother: Callable[[], KeypointSmoother] | None = None
        if smooth:
            self._new_smoother = partial(KeypointSmoother, min_cutoff, beta, d_cutoff, min_keypoint_score)
            self._new_smoother()  # a bad filter parameter fails here rather than at the first person
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1, e.g. for a new video."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._time: float | None = None

    def update(self, poses: Sequence[Pose], timestamp: float | None = None) -> list[Pose]:
        """This frame's tracked poses, in input order, as copies with ``track_id`` (and smoothed keypoints).

        ``timestamp`` is the frame's time in seconds (increasing); None means ``1 / fps`` after the last
        frame. Poses that are neither matched to a track nor start one (scored below ``low_threshold``, or
        below ``high_threshold`` with no track to continue) are left out of the result. A pose whose keypoints
        are not ``(17, 3)``, whose score is not finite or whose box is not four numbers is a ValueError naming
        it; keypoints that are not finite are unseen in this frame (returned as 0, 0 with score 0), and a pose
        with no finite keypoint is left out.
        """
        time = (0.0 if self._time is None else self._time + 1.0 / self.fps) if timestamp is None else timestamp
        if self._time is not None and time <= self._time:
            raise ValueError(f"timestamps must increase, got {time} after {self._time}")
        checked = [_checked(index, pose) for index, pose in enumerate(poses)]
        poses = [pose for pose, _ in checked]
        usable = [index for index, (_, finite) in enumerate(checked) if finite]
        self._time = time

        high = [i for i in usable if poses[i].score >= self.high_threshold]
        low = [i for i in usable if self.low_threshold <= poses[i].score < self.high_threshold]
        matches = self._match(poses, high, list(range(len(self._tracks))), time)
        first_stage = set(matches.values())
        matches.update(self._match(poses, low, [t for t in range(len(self._tracks)) if t not in first_stage], time))

        matched = set(matches.values())
        for index, track in enumerate(self._tracks):
            if index not in matched:
                track.missed += 1
        starts = set(high) - matches.keys()
        tracked = []
        for index, pose in enumerate(poses):
            if index in matches:
                track = self._continue(self._tracks[matches[index]], pose, time)
            elif index in starts:
                track = self._start(pose, time)
            else:
                continue
            if track.smoother is None:
                keypoints = pose.keypoints
            else:
                keypoints = track.smoother(pose.keypoints, time, person_size(pose.box, pose.keypoints))
            tracked.append(dataclasses.replace(pose, keypoints=keypoints, track_id=track.track_id))
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        return tracked

    def _match(self, poses: Sequence[Pose], detections: list[int], tracks: list[int], time: float) -> dict[int, int]:
        """Pose index -> index into ``self._tracks`` for the optimal matches between the two lists."""
        if not detections or not tracks:
            return {}
        predicted = np.stack([self._tracks[t].predicted(time) for t in tracks])
        found = np.stack([np.asarray(poses[d].keypoints, dtype=np.float64) for d in detections])
        areas = np.array([box_area(np.asarray(poses[d].box), found[k]) for k, d in enumerate(detections)])
        similarity = keypoint_similarity(predicted, found, areas, self.min_keypoint_score)
        return {detections[d]: tracks[t] for t, d in assign(similarity, self.min_similarity)}

    def _continue(self, track: _Track, pose: Pose, time: float) -> _Track:
        """Move ``track`` to ``pose``; its velocity from the keypoints seen in both detections."""
        keypoints = np.array(pose.keypoints, dtype=np.float64)  # a copy: the caller may reuse its array
        common = (keypoints[:, 2] >= self.min_keypoint_score) & (track.keypoints[:, 2] >= self.min_keypoint_score)
        if common.any():
            moved = keypoints[common, :2].mean(axis=0) - track.keypoints[common, :2].mean(axis=0)
            track.velocity = moved / (time - track.time)
        track.keypoints, track.time, track.missed = keypoints, time, 0
        return track

    def _start(self, pose: Pose, time: float) -> _Track:
        """A new track at ``pose`` with the next id, standing still until it is seen again."""
        track = _Track(
            track_id=self._next_id,
            keypoints=np.array(pose.keypoints, dtype=np.float64),
            time=time,
            velocity=np.zeros(2),
            smoother=None if self._new_smoother is None else self._new_smoother(),
        )
        self._next_id += 1
        self._tracks.append(track)
        return track
