"""One-Euro filtering of keypoints over time: less jitter when a person stands still, little lag when they move.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential low-pass filter whose cutoff
rises with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``. Slow motion is smoothed hard
(jitter is what the eye sees there), fast motion hardly at all (lag is what the eye sees there). Each
value keeps its own last timestamp, so values skipped for a while (an occluded keypoint) resume with the
longer time step, which smooths them less instead of dragging them back from a stale position.

The defaults are for keypoints in pixels at about 30 fps, tuned with ``benchmarks/scripts/tracking.py --tune``
on the quickstart model's detections of synthetic people walking in 128x128 videos: little jitter while the mean
error to the truth stays below the raw keypoints' (jitter 0.91 -> 0.64 px/frame², error 2.94 -> 2.93 px;
lower ``min_cutoff`` or ``beta`` smooth more but lag behind walking people, which raises the error). ``beta``
multiplies a speed in pixels per second: with 0.5, a joint moving 30 px/s (1 px a frame) raises the cutoff from
4 Hz to 19 Hz. In larger images the same motion covers more pixels, so ``beta`` scales down with resolution
(0.1 for 640-pixel frames).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

MIN_CUTOFF = 4.0
BETA = 0.5
D_CUTOFF = 1.0
MIN_KEYPOINT_SCORE = 0.3


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    """Smoothing factor of a first-order low-pass filter with ``cutoff`` (Hz) sampled ``dt`` seconds apart."""
    rate = 2.0 * math.pi * np.asarray(cutoff) * dt
    return rate / (rate + 1.0)


class OneEuroFilter:
    """One-Euro filter of an array of values (any fixed shape), each filtered on its own.

    ``min_cutoff`` (Hz) is the cutoff when the value is still: lower means less jitter, more lag.
    ``beta`` (per unit of the values' speed, e.g. 1/px) raises the cutoff with speed: higher means less
    lag in fast motion. ``d_cutoff`` (Hz) smooths the speed estimate itself; 1 Hz is the paper's value.
    The first value of each element passes through unchanged and starts its filter.
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

    def __call__(self, values: ArrayLike, timestamp: float, mask: ArrayLike | None = None) -> np.ndarray:
        """The filtered values at ``timestamp`` (seconds, increasing for each element).

        Elements where ``mask`` (broadcast to the values' shape) is False pass through unfiltered and
        leave their filter as it was, for values that are known to be unreliable in this frame.
        """
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
            filtered = previous + _alpha(self.min_cutoff + self.beta * np.abs(speed), dt) * (x[seen] - previous)
            self._speed[seen] = speed
            self._value[seen] = filtered
            out[seen] = filtered
        self._time[update] = timestamp
        return out


class KeypointSmoother:
    """One person's keypoints ``(17, 3)`` through a :class:`OneEuroFilter` on x, y; scores are kept as they are.

    A keypoint scored below ``min_score`` is passed through raw and not fed to its filter: its position is
    a guess (occluded or off-image), and filtering it would both smear that guess and pull the filter
    away from where the joint will be seen again. A renderer hides such keypoints by their score anyway.
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

    def __call__(self, keypoints: np.ndarray, timestamp: float) -> np.ndarray:
        """A new ``(17, 3)`` array: smoothed x, y where the score reaches ``min_score``, the input elsewhere."""
        out = np.array(keypoints, dtype=np.float64)
        out[:, :2] = self.filter(out[:, :2], timestamp, (out[:, 2] >= self.min_score)[:, None])
        return out
