"""PoseTracker and One-Euro smoothing on synthetic stick figures: identities, gaps, low scores, jitter."""

from __future__ import annotations

import numpy as np
import pytest

from poet.processing import Pose, keypoint_box
from poet.runtime.smoothing import KeypointSmoother, OneEuroFilter
from poet.runtime.tracking import PoseTracker, assign

# A standing person about 170 px tall, feet at the origin, in COCO-17 keypoint order.
FIGURE = np.array(
    [
        (0, -160),  # nose
        (-4, -165),
        (4, -165),
        (-9, -162),
        (9, -162),
        (-20, -135),  # shoulders
        (20, -135),
        (-26, -105),  # elbows
        (26, -105),
        (-28, -75),  # wrists
        (28, -75),
        (-12, -80),  # hips
        (12, -80),
        (-13, -40),  # knees
        (13, -40),
        (-14, 0),  # ankles
        (14, 0),
    ],
    dtype=np.float64,
)


def person(x: float, y: float, rng: np.random.Generator, score: float = 0.9, noise: float = 1.0) -> Pose:
    """The figure with its feet at (x, y), each keypoint jittered by ``noise`` px, box from the keypoints."""
    xy = FIGURE + np.array([x, y]) + rng.normal(0.0, noise, FIGURE.shape)
    keypoints = np.column_stack([xy, np.full(len(FIGURE), 0.9)])
    return Pose(keypoints=keypoints, score=score, box=keypoint_box(keypoints))


def track(tracker: PoseTracker, frames: list[dict[str, Pose]]) -> dict[str, list[int | None]]:
    """Each named person's track id, frame by frame; every pose given must come back tracked."""
    ids: dict[str, list[int | None]] = {}
    for frame in frames:
        tracked = tracker.update(list(frame.values()))
        assert len(tracked) == len(frame)
        for name, pose in zip(frame, tracked, strict=True):
            ids.setdefault(name, []).append(pose.track_id)
    return ids


def crossing(seed: int = 0) -> list[dict[str, Pose]]:
    """Two people walking towards each other at 8 px a frame, passing 4 px apart; input order shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(60):
        people = {"a": person(100 + 8 * f, 300, rng), "b": person(571 - 8 * f, 304, rng)}
        frames.append({name: people[name] for name in [("a", "b")[i] for i in rng.permutation(2)]})
    return frames


def test_two_people_crossing_keep_their_ids():
    # Matching against last-seen positions (no motion prediction) swaps the two ids where they pass.
    ids = track(PoseTracker(), crossing())
    assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1
    assert ids["a"][0] != ids["b"][0]


def test_same_input_gives_same_ids_and_reset_starts_over():
    tracker = PoseTracker()
    first = track(tracker, crossing(seed=3))
    tracker.reset()
    assert track(tracker, crossing(seed=3)) == first == track(PoseTracker(), crossing(seed=3))


def test_a_person_missed_for_five_frames_gets_the_same_id_back():
    rng = np.random.default_rng(1)
    tracker = PoseTracker()
    frames = []
    for f in range(40):
        frame = {"still": person(700, 320, rng)}
        if not 20 <= f < 25:
            frame["walker"] = person(100 + 6 * f, 300, rng)
        frames.append(frame)
    ids = track(tracker, frames)
    assert set(ids["walker"]) == {ids["walker"][0]} and set(ids["still"]) == {ids["still"][0]}
    assert ids["walker"][0] != ids["still"][0]


@pytest.mark.parametrize(("gap", "same_id"), [(3, True), (4, False)])
def test_a_track_is_kept_for_max_missed_frames_then_dropped(gap, same_id):
    rng = np.random.default_rng(2)
    tracker = PoseTracker(max_missed=3)
    ids = []
    for f in range(20):
        poses = [] if 10 <= f < 10 + gap else [person(100 + 6 * f, 300, rng)]
        ids += [pose.track_id for pose in tracker.update(poses)]
    assert ids == [1] * 10 + [1 if same_id else 2] * (10 - gap)


def test_assignment_is_optimal_rather_than_greedy():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])  # greedy takes 0.9 first and strands the second row
    assert sorted(assign(similarity, 0.3)) == [(0, 1), (1, 0)]
    assert assign(np.array([[0.2, 0.9]]), 0.3) == [(0, 1)]
    assert assign(np.zeros((0, 3)), 0.3) == []


def test_low_scores_continue_a_track_but_never_start_one():
    rng = np.random.default_rng(4)
    tracker = PoseTracker()
    assert tracker.update([person(600, 300, rng, score=0.2)]) == []
    for _ in range(5):
        assert [pose.track_id for pose in tracker.update([person(100, 300, rng)])] == [1]
    for _ in range(5):
        tracked = tracker.update([person(600, 300, rng, score=0.2), person(100, 300, rng, score=0.3)])
        assert [(pose.score, pose.track_id) for pose in tracked] == [(0.3, 1)]
    tracked = tracker.update([person(100, 300, rng), person(350, 300, rng)])
    assert [pose.track_id for pose in tracked] == [1, 2]


def test_a_new_person_gets_the_next_id_while_the_others_keep_theirs():
    rng = np.random.default_rng(5)
    frames = [{"a": person(100, 300, rng), "b": person(400, 300, rng)} for _ in range(5)]
    frames += [{"c": person(250, 320, rng), "a": person(100, 300, rng), "b": person(400, 300, rng)} for _ in range(5)]
    ids = track(PoseTracker(), frames)
    assert ids == {"a": [1] * 10, "b": [2] * 10, "c": [3] * 5}


def test_timestamps_default_to_one_frame_at_fps_and_must_increase():
    by_fps, timed = PoseTracker(fps=25), PoseTracker()
    for index, frame in enumerate(crossing(seed=6)):
        counted = by_fps.update(list(frame.values()))
        stamped = timed.update(list(frame.values()), 10 + index / 25)
        assert [p.track_id for p in counted] == [p.track_id for p in stamped]
        assert all(np.allclose(c.keypoints, s.keypoints) for c, s in zip(counted, stamped, strict=True))
    with pytest.raises(ValueError, match="timestamps must increase"):
        timed.update([], 10.0)


def test_smoothing_starts_raw_and_can_be_switched_off():
    rng = np.random.default_rng(7)
    poses = [person(200, 300, rng, noise=2.0) for _ in range(10)]
    raw, smooth = PoseTracker(smooth=False), PoseTracker()
    for index, pose in enumerate(poses):
        (unsmoothed,) = raw.update([pose])
        (smoothed,) = smooth.update([pose])
        assert np.array_equal(unsmoothed.keypoints, pose.keypoints)
        assert np.array_equal(smoothed.keypoints, pose.keypoints) == (index == 0)
        assert np.array_equal(smoothed.keypoints[:, 2], pose.keypoints[:, 2])


def test_one_euro_reduces_jitter_without_adding_error():
    rng = np.random.default_rng(8)
    times = np.arange(150) / 30.0
    truth = 200.0 + 30.0 * times[:, None, None] + np.zeros((1, 17, 2))  # a slow walk: 30 px/s
    noisy = truth + rng.normal(0.0, 2.0, truth.shape)
    size = 170.0  # px: the person walks at 0.18 of their height a second
    one_euro = OneEuroFilter()
    filtered = np.stack([one_euro(values, t, scale=size) for values, t in zip(noisy, times, strict=True)])

    def jitter(track: np.ndarray) -> float:
        return float(np.abs(np.diff(track[30:], n=2, axis=0)).mean())

    def error(track: np.ndarray) -> float:
        return float(np.abs(track[30:] - truth[30:]).mean())

    # The defaults smooth only as far as walking people are not lagged behind (tracking.py --tune): a quarter off.
    assert jitter(filtered) < 0.8 * jitter(noisy)
    assert error(filtered) <= error(noisy)
    stronger = OneEuroFilter(min_cutoff=1.0, beta=5.0)
    smoothed = np.stack([stronger(values, t, scale=size) for values, t in zip(noisy, times, strict=True)])
    assert jitter(smoothed) < 0.5 * jitter(noisy)


def test_one_euro_passes_a_constant_signal_unchanged():
    one_euro = OneEuroFilter()
    values = np.array([[3.5, -1.0], [640.0, 0.25]])
    for frame in range(20):
        assert np.array_equal(one_euro(values, frame / 30.0), values)


def test_low_score_keypoints_pass_through_the_smoother_raw():
    rng = np.random.default_rng(9)
    smoother = KeypointSmoother()
    for frame in range(10):
        keypoints = person(200, 300, rng, noise=3.0).keypoints
        keypoints[0, 2] = 0.1
        out = smoother(keypoints, frame / 30.0)
        assert np.array_equal(out[0], keypoints[0])
        assert np.array_equal(out[1:], keypoints[1:]) == (frame == 0)


def test_pose_to_dict_has_track_id_only_when_set():
    pose = Pose(keypoints=np.zeros((17, 3)), score=0.9)
    assert "track_id" not in pose.to_dict()
    assert Pose(keypoints=np.zeros((17, 3)), score=0.9, track_id=7).to_dict() == {**pose.to_dict(), "track_id": 7}


def walk(scale: float, seed: int = 3, frames: int = 90) -> list[Pose]:
    """One person walking at 1 px a frame with 1 px of noise, everything (size, speed, noise) times ``scale``."""
    rng = np.random.default_rng(seed)
    poses = []
    for f in range(frames):
        pose = person(200 + f, 300, rng)
        keypoints = pose.keypoints.copy()
        keypoints[:, :2] *= scale
        poses.append(Pose(keypoints=keypoints, score=0.9, box=pose.box * scale))
    return poses


def test_smoothing_is_the_same_at_every_image_size():
    """Speeds are in person sizes per second: the same scene 8 times larger is smoothed 8 times larger."""
    small, large = PoseTracker(), PoseTracker()
    for pose_small, pose_large in zip(walk(1.0), walk(8.0), strict=True):
        (out_small,) = small.update([pose_small])
        (out_large,) = large.update([pose_large])
        np.testing.assert_allclose(out_large.keypoints[:, :2], 8.0 * out_small.keypoints[:, :2], rtol=1e-9)


def test_a_detection_with_non_finite_keypoints_cannot_poison_its_track():
    poses = walk(1.0)
    bad = poses[30].keypoints.copy()
    bad[3, 0], bad[5, 1], bad[7, 2] = np.nan, np.inf, np.nan
    poses[30] = Pose(keypoints=bad, score=0.9, box=poses[30].box)
    poses[31] = Pose(keypoints=np.full((17, 3), np.nan), score=0.9, box=np.full(4, np.nan))
    tracker = PoseTracker()
    outputs = [tracker.update([pose]) for pose in poses]
    assert outputs[31] == []  # nothing to track there
    del outputs[31]
    assert all(len(out) == 1 and out[0].track_id == 1 for out in outputs)
    assert all(np.isfinite(out[0].keypoints).all() for out in outputs)
    assert np.array_equal(outputs[30][0].keypoints[[3, 5, 7]], np.zeros((3, 3)))  # unseen in that frame
    # From the next good frame on the track smooths as if the bad keypoints had only been missed.
    np.testing.assert_allclose(outputs[-1][0].keypoints[:, :2], poses[-1].keypoints[:, :2], atol=3.0)


@pytest.mark.parametrize(
    ("pose", "message"),
    [
        (
            Pose(keypoints=np.zeros((16, 3)), score=0.9),
            r"pose 1: keypoints must have shape \(17, 3\).*got shape \(16, 3\)",
        ),
        (Pose(keypoints=np.zeros((17, 2)), score=0.9), r"pose 1: keypoints must have shape \(17, 3\)"),
        (Pose(keypoints=np.zeros((17, 3)), score=float("nan")), "pose 1: score must be a finite number; got nan"),
        (Pose(keypoints=np.zeros((17, 3)), score=0.9, box=np.zeros(3)), r"pose 1: box must be four numbers"),
        (Pose(keypoints="seventeen", score=0.9), "pose 1: keypoints, box and score must be numbers"),  # type: ignore[arg-type]
    ],
)
def test_a_pose_of_the_wrong_shape_or_score_is_one_clear_error(pose, message):
    good = person(100, 200, np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        PoseTracker().update([good, pose])
