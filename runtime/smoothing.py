"""One-Euro filtering of keypoints over time: less jitter when a person stands still, little lag when they move.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential low-pass filter whose cutoff
rises with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``. Slow motion is smoothed hard
(jitter is what the eye sees there), fast motion hardly at all (lag is what the eye sees there). Each
value keeps its own last timestamp, so values skipped for a while (an occluded keypoint) resume with the
longer time step, which smooths them less instead of dragging them back from a stale position.

Speeds are measured in the person's own size per second (the longer side of their box, their height when
standing), so one set of defaults holds at 128x128 and at 1080p: a person walking at one body height a second
raises the cutoff from ``min_cutoff`` by ``beta`` Hz, whether they are 40 or 640 pixels tall. The defaults
(``min_cutoff`` 6 Hz, ``beta`` 20) were tuned with ``benchmarks/scripts/tracking.py --tune`` on the quickstart
model's detections of synthetic people walking in 128x128 and 512x512 videos: at both sizes they leave 0.68 of
the raw keypoints' jitter at a mean error to the truth no higher than raw (0.996 and 0.999 of it). No setting
halves the jitter without raising the error: smoothing harder (lower ``min_cutoff`` or ``beta``) lags behind
walking people (``min_cutoff`` 1 Hz, ``beta`` 10: half the jitter, 2.6% more error).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from poet.processing import keypoint_box

MIN_CUTOFF = 6.0
BETA = 20.0
D_CUTOFF = 1.0
MIN_KEYPOINT_SCORE = 0.3


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    """Smoothing factor of a first-order low-pass filter with ``cutoff`` (Hz) sampled ``dt`` seconds apart."""
    rate = 2.0 * math.pi * np.asarray(cutoff) * dt
    return rate / (rate + 1.0)


class OneEuroFilter:
    """One-Euro filter of an array of values (any fixed shape), each filtered on its own.

    ``min_cutoff`` (Hz) is the cutoff when the value is still: lower means less jitter, more lag.
    ``beta`` (Hz per unit of the values' speed, that unit being ``scale`` per second) raises the cutoff with
    speed: higher means less lag in fast motion. ``d_cutoff`` (Hz) smooths the speed estimate itself; 1 Hz is
    the paper's value. The first value of each element passes through unchanged and starts its filter.
    """

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"min_cutoff and d_cutoff must be above 0 and beta at least 0, got {min_cutoff}, {d_cutoff}, {beta}"
            )
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget every value: the next call passes through and starts afresh (e.g. a new video)."""
        self._value: np.ndarray | None = None
        self._speed = np.empty(0)
        self._time = np.empty(0)

    def __call__(
        self, values: ArrayLike, timestamp: float, mask: ArrayLike | None = None, scale: float = 1.0
    ) -> np.ndarray:
        """The filtered values at ``timestamp`` (seconds, increasing for each element).

        Elements where ``mask`` (broadcast to the values' shape) is False pass through unfiltered and
        leave their filter as it was, for values that are known to be unreliable in this frame. ``scale`` is
        the unit of the speed that ``beta`` multiplies: the values' speed is divided by it first.
        """
        if not scale > 0:
            raise ValueError(f"scale must be above 0, got {scale}")
        x = np.asarray(values, dtype=np.float64)
        if self._value is None:
            self._value = x.copy()
            self._speed = np.zeros(x.shape)
            self._time = np.full(x.shape, np.nan)
        elif x.shape != self._value.shape:
            raise ValueError(f"values must keep the shape {self._value.shape}, got {x.shape}")
        update = np.broadcast_to(np.asarray(True if mask is None else mask, dtype=bool), x.shape)
        out = x.copy()
        first = update & np.isnan(self._time)
        self._value[first] = x[first]
        seen = update & ~first
        if seen.any():
            dt = timestamp - self._time[seen]
            if (dt <= 0).any():
                raise ValueError(f"timestamps must increase, got {timestamp} after {float(self._time[seen].max())}")
            previous = self._value[seen]
            speed = self._speed[seen] + _alpha(self.d_cutoff, dt) * ((x[seen] - previous) / dt - self._speed[seen])
            cutoff = self.min_cutoff + self.beta * np.abs(speed) / scale
            filtered = previous + _alpha(cutoff, dt) * (x[seen] - previous)
            self._speed[seen] = speed
            self._value[seen] = filtered
            out[seen] = filtered
        self._time[update] = timestamp
        return out


class KeypointSmoother:
    """One person's keypoints ``(17, 3)`` through a :class:`OneEuroFilter` on x, y; scores are kept as they are.

    Speeds are measured in the person's own size (:func:`person_size`) per second, so ``beta`` means the same
    for a person 40 pixels tall and for one 640 pixels tall. A keypoint scored below ``min_score`` is passed
    through raw and not fed to its filter: its position is a guess (occluded or off-image), and filtering it
    would both smear that guess and pull the filter away from where the joint will be seen again. A renderer
    hides such keypoints by their score anyway.
    """

    def __init__(
        self,
        min_cutoff: float = MIN_CUTOFF,
        beta: float = BETA,
        d_cutoff: float = D_CUTOFF,
        min_score: float = MIN_KEYPOINT_SCORE,
    ) -> None:
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.min_score = min_score

    def __call__(self, keypoints: np.ndarray, timestamp: float, size: float | None = None) -> np.ndarray:
        """A new ``(17, 3)`` array: smoothed x, y where the score reaches ``min_score``, the input elsewhere.

        ``size``: the person's size in pixels, e.g. from their detected box (default: from the keypoints).
        """
        out = np.array(keypoints, dtype=np.float64)
        seen = out[:, 2] >= self.min_score
        scale = person_size(np.zeros(4), out) if size is None else size
        out[:, :2] = self.filter(out[:, :2], timestamp, seen[:, None], scale)
        return out


def person_size(box: np.ndarray, keypoints: np.ndarray) -> float:
    """A person's size in pixels: the longer side of :func:`person_box` (their height, standing); at least 1."""
    x0, y0, x1, y1 = person_box(box, keypoints)
    return max(float(x1 - x0), float(y1 - y0), 1.0)


def person_box(box: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``box`` where it is one (finite, of positive size), else the box around the keypoints (a pose built
    without a box): :func:`poet.processing.keypoint_box`."""
    box = np.asarray(box, dtype=np.float64)
    if np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
        return box
    return keypoint_box(keypoints)
