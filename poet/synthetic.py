"""Synthetic people in COCO person-keypoints format, so POET can be trained and tested without COCO.

Each image holds 1..max_people articulated figures (torso, head, two-segment arms and legs) drawn over
a cluttered background. The body model places the 17 COCO keypoints exactly, and every left limb is
drawn in a warm hue while every right limb is cool, so left/right is learnable even for figures seen
from behind. Later figures and foreground objects hide earlier ones; keypoints they cover are labelled
v=1 where some of the person shows close by, as COCO's annotators label the occluded joints they can place,
and left unlabelled where the body around them is wholly hidden.
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from poet.console import add_progress, run_cli
from poet.evaluation import coco_split_paths
from poet.fileio import atomic_path, write_json
from poet.skeleton import KEYPOINT_NAMES, SKELETON

JPEG_QUALITY = 90
# A COCO annotation needs some pixels to point at; figures hidden below this are left unannotated.
MIN_VISIBLE_AREA_PX = 24
# A hidden joint is labelled (v=1) only when at least this many pixels of the person's own body show within
# this fraction of their height: COCO's annotators label occluded joints they can place, not those wholly
# hidden behind someone else.
INFERABLE_RADIUS = 0.1
INFERABLE_MIN_PIXELS = 16
# Rate at which labelled keypoints lose their label, like joints an annotator skipped.
LABEL_DROP_RATE = 0.03
FOREGROUND_OCCLUDER_PROBABILITY = 0.15
FRONT_FACING_PROBABILITY = 0.65
# Share of figures placed wholly inside the frame; the rest may hang up to this fraction outside.
FULLY_INSIDE_PROBABILITY = 0.8
MAX_OUTSIDE_FRACTION = 0.45
# Person height as a fraction of the image height: the smallest default and the largest.
MIN_PERSON_HEIGHT = 0.25
MAX_PERSON_HEIGHT = 0.9

# Body proportions as fractions of standing height (head top to ankles).
HEAD_RADIUS = 0.07
NECK_LENGTH = 0.05
TORSO_LENGTH = 0.32
SHOULDER_HALF_WIDTH = 0.115
HIP_HALF_WIDTH = 0.075
UPPER_ARM_LENGTH = 0.17
FOREARM_LENGTH = 0.15
HAND_LENGTH = 0.035
THIGH_LENGTH = 0.245
SHIN_LENGTH = 0.245
FOOT_LENGTH = 0.055
# Limb widths (clothed) as fractions of standing height. OKS scales its tolerance by the square root of the
# person's area, so stick-thin figures would be judged more strictly than COCO's people. With these widths and
# the shoulders and hips above, near-whole people (14 or more labelled keypoints) have a median area of 0.33
# times the square of their keypoints' height, coco-mini's 0.32; the thinner figures of before had 0.28.
ARM_THICKNESS = (0.065, 0.09)
LEG_THICKNESS = (0.085, 0.115)

# OpenCV hue (0..180) ranges: warm for the person's left limbs, cool for the right.
LEFT_HUE_RANGE = (0, 28)
RIGHT_HUE_RANGE = (95, 128)
SKIN_TONES_BGR = (
    (197, 224, 255),
    (160, 200, 240),
    (120, 170, 225),
    (90, 135, 190),
    (60, 95, 140),
    (40, 60, 95),
)

# Fixed-point precision for OpenCV drawing, so figures are placed to 1/16 pixel.
_SHIFT = 4
_SUBPIXEL = 1 << _SHIFT

Color = tuple[int, ...]
Pair = tuple[float, float]


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return round(point[0] * _SUBPIXEL), round(point[1] * _SUBPIXEL)


def _direction(angle: float) -> np.ndarray:
    """Unit vector for an angle measured from straight down, positive turning towards image right."""
    return np.array([np.sin(angle), np.cos(angle)])


def _hsv_to_bgr(hue: float, saturation: float, value: float) -> Color:
    pixel = np.array([[[hue, saturation, value]]], dtype=np.uint8)
    blue, green, red = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(blue), int(green), int(red)


def _scaled(color: Color, factor: float) -> Color:
    return tuple(int(min(255, channel * factor)) for channel in color)


@dataclass(frozen=True)
class _Stroke:
    """A thick segment with round caps: one limb bone."""

    start: np.ndarray
    end: np.ndarray
    thickness: float
    color: Color

    def draw(self, canvas: np.ndarray, color: Color, line_type: int) -> None:
        width = max(1, round(self.thickness))
        cv2.line(canvas, _fixed(self.start), _fixed(self.end), color, width, line_type, _SHIFT)


@dataclass(frozen=True)
class _Disc:
    center: np.ndarray
    radius: float
    color: Color

    def draw(self, canvas: np.ndarray, color: Color, line_type: int) -> None:
        radius = max(1, round(self.radius * _SUBPIXEL))
        cv2.circle(canvas, _fixed(self.center), radius, color, -1, line_type, _SHIFT)


@dataclass(frozen=True)
class _Ellipse:
    """A filled ellipse or elliptic sector (feet, hair)."""

    center: np.ndarray
    half_axes: Pair
    angle_deg: float
    color: Color
    arc_deg: Pair = (0.0, 360.0)

    def draw(self, canvas: np.ndarray, color: Color, line_type: int) -> None:
        axes = (
            max(1, round(self.half_axes[0] * _SUBPIXEL)),
            max(1, round(self.half_axes[1] * _SUBPIXEL)),
        )
        start, end = self.arc_deg
        center = _fixed(self.center)
        cv2.ellipse(canvas, center, axes, self.angle_deg, start, end, color, -1, line_type, _SHIFT)


@dataclass(frozen=True)
class _Polygon:
    points: np.ndarray
    color: Color

    def draw(self, canvas: np.ndarray, color: Color, line_type: int) -> None:
        fixed = np.round(self.points * _SUBPIXEL).astype(np.int32)
        cv2.fillPoly(canvas, [fixed], color, line_type, _SHIFT)


@dataclass(frozen=True)
class _Outline:
    """An open or closed polyline (clutter only)."""

    points: np.ndarray
    closed: bool
    thickness: float
    color: Color

    def draw(self, canvas: np.ndarray, color: Color, line_type: int) -> None:
        fixed = np.round(self.points * _SUBPIXEL).astype(np.int32)
        cv2.polylines(canvas, [fixed], self.closed, color, max(1, round(self.thickness)), line_type, _SHIFT)


_Shape = _Stroke | _Disc | _Ellipse | _Polygon | _Outline


@dataclass
class _Figure:
    """One person in image pixels: where the keypoints are, which are labelled, and what to draw."""

    keypoints: np.ndarray
    labelled: np.ndarray
    shapes: list[_Shape]
    height: float

    def draw(self, image: np.ndarray, mask: np.ndarray) -> None:
        for shape in self.shapes:
            shape.draw(image, shape.color, cv2.LINE_AA)
            shape.draw(mask, (255,), cv2.LINE_8)


@dataclass
class _Pose:
    """Joint positions of a unit-height figure, before scaling and placement."""

    points: dict[str, np.ndarray]
    face_labelled: dict[str, bool]
    head_tilt: float
    face_towards_camera: bool


def _clipped_angle(rng: np.random.Generator, mean: float, deviation: float, limits: Pair) -> float:
    """Normal sample in degrees, clipped to limits, returned in radians."""
    low, high = limits
    return math.radians(min(high, max(low, rng.normal(mean, deviation))))


def _joint_angle(rng: np.random.Generator, relaxed: Pair, limits: Pair) -> float:
    """Angle in radians, given degrees: half the time near a relaxed pose, otherwise anywhere plausible."""
    if rng.random() < 0.5:
        return _clipped_angle(rng, *relaxed, limits)
    return math.radians(rng.uniform(*limits))


def _bent_limb(
    rng: np.random.Generator, root: np.ndarray, angle: float, lengths: Pair, bend: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Middle joint, end joint and end-segment angle of a two-segment limb bent either way.

    Each segment is shortened at random, as a limb pointing towards or away from the camera looks.
    """
    first, second = np.asarray(lengths) * rng.uniform(0.72, 1.0, size=2)
    end_angle = angle + float(rng.choice((-1.0, 1.0))) * bend
    middle = root + first * _direction(angle)
    return middle, middle + second * _direction(end_angle), end_angle


def _sample_pose(rng: np.random.Generator) -> _Pose:
    """Random plausible pose; yaw angles decide which side faces the camera and which face points show."""
    facing_front = bool(rng.random() < FRONT_FACING_PROBABILITY)
    body_yaw = math.radians(rng.uniform(-45, 45) + (0 if facing_front else 180))
    head_yaw = body_yaw + _clipped_angle(rng, 0, 20, (-60, 60))
    lean = _clipped_angle(rng, 0, 8, (-25, 25))
    head_tilt = lean + _clipped_angle(rng, 0, 10, (-25, 25))
    build = rng.uniform(0.9, 1.1, size=4)

    points: dict[str, np.ndarray] = {"hip_mid": np.zeros(2)}
    torso_up = -_direction(lean)
    torso_right = np.array([-torso_up[1], torso_up[0]])
    points["shoulder_mid"] = points["hip_mid"] + TORSO_LENGTH * build[0] * torso_up
    # The person's left side sits at body angle yaw + 90 degrees, so it projects to +cos(yaw) * width.
    shoulder_offset = SHOULDER_HALF_WIDTH * build[1] * np.cos(body_yaw) * torso_right
    hip_offset = HIP_HALF_WIDTH * build[1] * np.cos(body_yaw) * torso_right
    points["left_shoulder"] = points["shoulder_mid"] + shoulder_offset
    points["right_shoulder"] = points["shoulder_mid"] - shoulder_offset
    points["left_hip"] = points["hip_mid"] + hip_offset
    points["right_hip"] = points["hip_mid"] - hip_offset

    head_up = -_direction(head_tilt)
    head_right = np.array([-head_up[1], head_up[0]])
    head_center = points["shoulder_mid"] + (NECK_LENGTH + HEAD_RADIUS) * build[2] * head_up
    points["head_center"] = head_center
    face_labelled: dict[str, bool] = {}
    # (keypoint, yaw offset around the head, height above head centre, lowest cosine still visible)
    face_layout = (
        ("nose", 0.0, -0.3, 0.0),
        ("left_eye", 0.5, 0.05, 0.0),
        ("right_eye", -0.5, 0.05, 0.0),
        ("left_ear", np.pi / 2, 0.0, -0.25),
        ("right_ear", -np.pi / 2, 0.0, -0.25),
    )
    for name, yaw_offset, height, min_cosine in face_layout:
        angle = head_yaw + yaw_offset
        across = HEAD_RADIUS * build[2] * np.sin(angle) * np.sqrt(1 - height**2)
        points[name] = head_center + across * head_right + HEAD_RADIUS * build[2] * height * head_up
        face_labelled[name] = bool(np.cos(angle) > min_cosine)

    arm_lengths = (UPPER_ARM_LENGTH * build[3], FOREARM_LENGTH * build[3])
    leg_lengths = (THIGH_LENGTH * build[3], SHIN_LENGTH * build[3])
    for side in ("left", "right"):
        shoulder, hip = points[f"{side}_shoulder"], points[f"{side}_hip"]
        outward = 1.0 if (shoulder - points["shoulder_mid"]) @ torso_right >= 0 else -1.0
        # Arms hang from the torso and lean with it; legs stand on the ground and do not.
        upper_arm_angle = lean + outward * _joint_angle(rng, relaxed=(15, 12), limits=(-30, 170))
        elbow_bend = _joint_angle(rng, relaxed=(10, 10), limits=(0, 145))
        elbow, wrist, forearm_angle = _bent_limb(rng, shoulder, upper_arm_angle, arm_lengths, elbow_bend)
        points[f"{side}_elbow"], points[f"{side}_wrist"] = elbow, wrist
        points[f"{side}_hand"] = wrist + HAND_LENGTH * _direction(forearm_angle)

        thigh_angle = outward * _joint_angle(rng, relaxed=(6, 8), limits=(-25, 65))
        knee_bend = _joint_angle(rng, relaxed=(5, 8), limits=(0, 80))
        knee, ankle, shin_angle = _bent_limb(rng, hip, thigh_angle, leg_lengths, knee_bend)
        points[f"{side}_knee"], points[f"{side}_ankle"] = knee, ankle
        points[f"{side}_toe"] = ankle + FOOT_LENGTH * _direction(shin_angle + outward * 1.2)
    face_towards_camera = bool(np.cos(head_yaw) > 0)
    return _Pose(points, face_labelled, head_tilt=head_tilt, face_towards_camera=face_towards_camera)


def _placement_offset(rng: np.random.Generator, bounds: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Shift for a figure spanning bounds (low, high): mostly wholly inside the frame, else partly out."""
    low, high = bounds
    extent = high - low
    fully_inside = rng.random() < FULLY_INSIDE_PROBABILITY and bool(np.all(extent < frame))
    slack = np.zeros(2) if fully_inside else MAX_OUTSIDE_FRACTION * extent
    return rng.uniform(-low - slack, np.maximum(frame - high + slack, -low - slack))


def _sample_figure(rng: np.random.Generator, height: int, width: int, min_height: float) -> _Figure:
    """Pose, scale, place and dress one person."""
    pose = _sample_pose(rng)
    person_height = rng.uniform(min_height, MAX_PERSON_HEIGHT) * height
    scaled = {name: point * person_height for name, point in pose.points.items()}
    head_radius = HEAD_RADIUS * person_height
    stacked = np.stack(list(scaled.values()))
    margin = 0.05 * person_height
    low = np.minimum(stacked.min(axis=0), scaled["head_center"] - head_radius) - margin
    high = stacked.max(axis=0) + margin
    offset = _placement_offset(rng, np.stack([low, high]), np.array([width, height], dtype=float))
    return _dressed_figure(rng, pose, {name: point + offset for name, point in scaled.items()}, person_height)


def _dressed_figure(
    rng: np.random.Generator, pose: _Pose, points: dict[str, np.ndarray], person_height: float
) -> _Figure:
    """The figure of ``pose`` with its joints at ``points`` (image pixels), clothed by ``rng``."""
    keypoints = np.stack([points[name] for name in KEYPOINT_NAMES])
    labelled = np.array([pose.face_labelled.get(name, True) for name in KEYPOINT_NAMES])
    shapes = _dress(rng, points, pose, person_height, HEAD_RADIUS * person_height)
    return _Figure(keypoints=keypoints, labelled=labelled, shapes=shapes, height=person_height)


def _dress(
    rng: np.random.Generator,
    points: dict[str, np.ndarray],
    pose: _Pose,
    person_height: float,
    head_radius: float,
) -> list[_Shape]:
    """Shapes in painting order: legs, torso, neck, head with face, then arms on top."""
    arm_thickness = rng.uniform(*ARM_THICKNESS) * person_height
    leg_thickness = rng.uniform(*LEG_THICKNESS) * person_height
    side_hues = {"left": rng.uniform(*LEFT_HUE_RANGE), "right": rng.uniform(*RIGHT_HUE_RANGE)}
    skin = _scaled(SKIN_TONES_BGR[rng.integers(len(SKIN_TONES_BGR))], rng.uniform(0.9, 1.1))
    shirt = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(30, 255), rng.uniform(60, 240))
    hair = _hsv_to_bgr(rng.uniform(0, 30), rng.uniform(40, 200), rng.uniform(20, 110))
    shoe = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(20, 90))

    shapes: list[_Shape] = []
    for side in ("left", "right"):
        leg = _hsv_to_bgr(side_hues[side], rng.uniform(150, 255), rng.uniform(130, 255))
        hip, knee, ankle = points[f"{side}_hip"], points[f"{side}_knee"], points[f"{side}_ankle"]
        toe = points[f"{side}_toe"]
        foot_angle = float(np.degrees(np.arctan2(*(toe - ankle)[::-1])))
        foot_half_axes = (0.6 * FOOT_LENGTH * person_height, 0.35 * leg_thickness)
        shapes += [
            _Stroke(hip, knee, leg_thickness, leg),
            _Stroke(knee, ankle, leg_thickness * 0.85, _scaled(leg, 0.8)),
            _Disc(knee, leg_thickness * 0.45, _scaled(leg, 0.6)),
            _Ellipse((ankle + toe) / 2, foot_half_axes, foot_angle, shoe),
        ]

    shoulder_axis = points["left_shoulder"] - points["right_shoulder"]
    shoulder_axis /= max(np.linalg.norm(shoulder_axis), 1e-6)
    hip_axis = points["left_hip"] - points["right_hip"]
    hip_axis /= max(np.linalg.norm(hip_axis), 1e-6)
    torso_down = points["hip_mid"] - points["shoulder_mid"]
    torso_down /= max(np.linalg.norm(torso_down), 1e-6)
    torso = np.stack(
        [
            points["left_shoulder"] + shoulder_axis * arm_thickness * 0.5,
            points["right_shoulder"] - shoulder_axis * arm_thickness * 0.5,
            points["right_hip"] - hip_axis * leg_thickness * 0.5 + torso_down * leg_thickness * 0.3,
            points["left_hip"] + hip_axis * leg_thickness * 0.5 + torso_down * leg_thickness * 0.3,
        ]
    )
    shapes += [
        _Polygon(torso, shirt),
        _Stroke(points["shoulder_mid"], points["head_center"], head_radius * 0.8, skin),
    ]

    head_center = points["head_center"]
    tilt_deg = float(np.degrees(-pose.head_tilt))
    for ear in ("left_ear", "right_ear"):
        if pose.face_labelled[ear]:
            shapes.append(_Disc(points[ear], head_radius * 0.25, _scaled(skin, 0.85)))
    if pose.face_towards_camera:
        hair_center = head_center - 0.35 * head_radius * _direction(pose.head_tilt)
        shapes += [
            _Disc(head_center, head_radius, skin),
            _Ellipse(hair_center, (head_radius * 1.02, head_radius * 0.72), tilt_deg, hair, (180.0, 360.0)),
        ]
    else:
        shapes.append(_Disc(head_center, head_radius * 1.03, hair))
    for eye in ("left_eye", "right_eye"):
        if pose.face_labelled[eye]:
            shapes.append(_Disc(points[eye], max(1.0, head_radius * 0.14), (30, 30, 30)))
    if pose.face_labelled["nose"]:
        shapes.append(_Disc(points["nose"], max(1.0, head_radius * 0.13), _scaled(skin, 0.7)))

    for side in ("left", "right"):
        arm = _hsv_to_bgr(side_hues[side], rng.uniform(150, 255), rng.uniform(130, 255))
        shoulder, elbow, wrist = points[f"{side}_shoulder"], points[f"{side}_elbow"], points[f"{side}_wrist"]
        shapes += [
            _Stroke(shoulder, elbow, arm_thickness, arm),
            _Stroke(elbow, wrist, arm_thickness * 0.85, _scaled(arm, 0.8)),
            _Disc(elbow, arm_thickness * 0.45, _scaled(arm, 0.6)),
            _Disc(points[f"{side}_hand"], arm_thickness * 0.55, skin),
        ]
    return shapes


def _random_color(rng: np.random.Generator) -> Color:
    return tuple(int(channel) for channel in rng.integers(0, 256, size=3))


def _sample_distractor(rng: np.random.Generator, height: int, width: int) -> _Shape:
    """One non-person clutter shape in a random colour: rotated box, blob, bar, zigzag or ring."""
    side = min(height, width)
    center = rng.uniform(0, [width, height])
    color = _random_color(rng)
    kind = rng.integers(5)
    if kind == 0:
        size = rng.uniform(0.05, 0.4, size=2) * side
        box = cv2.boxPoints(
            ((float(center[0]), float(center[1])), (float(size[0]), float(size[1])), rng.uniform(0, 180))
        )
        return _Polygon(box.astype(np.float64), color)
    if kind == 1:
        half_axes = rng.uniform(0.02, 0.2, size=2) * side + 1
        return _Ellipse(center, (float(half_axes[0]), float(half_axes[1])), float(rng.uniform(0, 180)), color)
    if kind == 2:
        thickness = float(rng.uniform(1, max(2, side / 40)))
        return _Stroke(center, rng.uniform(0, [width, height]), thickness, color)
    if kind == 3:
        vertices = center + rng.normal(0, 0.15 * side, size=(int(rng.integers(3, 7)), 2))
        return _Outline(vertices, bool(rng.random() < 0.5), float(rng.integers(1, 4)), color)
    radius = rng.uniform(0.03, 0.15) * side + 1
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ring = center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return _Outline(ring, True, float(rng.integers(1, 5)), color)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient plus smooth colour noise, optional stripes, then clutter shapes."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = cols * math.cos(angle) + rows * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    image = start + (end - start) * ramp[..., None]
    cell = rng.uniform(8, 32)
    coarse_shape = (int(height / cell) + 2, int(width / cell) + 2, 3)
    coarse_noise = rng.standard_normal(coarse_shape, dtype=np.float32) * rng.uniform(0, 35)
    image += cv2.resize(coarse_noise, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        wavenumber = 2 * math.pi / rng.uniform(6, 40)
        phase = cols * (math.cos(angle + 1) * wavenumber) + rows * (math.sin(angle + 1) * wavenumber)
        tint = rng.uniform(-30, 30, size=3).astype(np.float32)
        image += np.sin(phase)[..., None] * tint
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 12)):
        distractor = _sample_distractor(rng, height, width)
        distractor.draw(canvas, distractor.color, cv2.LINE_AA)
    return canvas


def _keypoint_annotation(
    figure: _Figure,
    occluders: np.ndarray,
    visible: np.ndarray,
    rng: np.random.Generator,
    drop_rate: float = LABEL_DROP_RATE,
) -> list[float]:
    """COCO's flat [x, y, v] * 17: v=2 visible, v=1 hidden under something drawn later but placeable, v=0
    unlabelled. As COCO's annotators do, a hidden joint is labelled only where its place can be inferred:
    some of the person's own body shows within ``INFERABLE_RADIUS`` of it (``visible`` is that body's mask
    minus what covers it), not a sliver of a few pixels. ``drop_rate``: share of labels skipped at random."""
    height, width = occluders.shape
    radius = INFERABLE_RADIUS * figure.height
    flat: list[float] = []
    for (x, y), labelled in zip(figure.keypoints, figure.labelled, strict=True):
        x, y = round(float(x), 2), round(float(y), 2)
        inside = 0 <= x <= width - 1 and 0 <= y <= height - 1
        if not labelled or not inside or rng.random() < drop_rate:
            flat += [0, 0, 0]
            continue
        if occluders[round(y), round(x)] == 0:
            flat += [x, y, 2]
            continue
        top, left = max(0, math.floor(y - radius)), max(0, math.floor(x - radius))
        rows, cols = np.nonzero(visible[top : math.ceil(y + radius) + 1, left : math.ceil(x + radius) + 1])
        inferable = int((np.hypot(rows + top - y, cols + left - x) <= radius).sum()) >= INFERABLE_MIN_PIXELS
        flat += [x, y, 1] if inferable else [0, 0, 0]
    return flat


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        simplified = cv2.approxPolyDP(contour, 0.75, True)
        if len(simplified) >= 3:
            polygons.append([float(value) for value in simplified.reshape(-1)])
    return polygons


def render_image(
    rng: np.random.Generator, height: int, width: int, max_people: int, min_height: float = MIN_PERSON_HEIGHT
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One BGR image and its person annotations (COCO fields minus the ids).

    Public so a training loop can also synthesise samples on the fly instead of reading files.
    """
    image = _background(rng, height, width)
    figures = [_sample_figure(rng, height, width, min_height) for _ in range(rng.integers(1, max_people + 1))]
    image, annotations, _ = _photograph(rng, image, figures)
    return image, [annotation for annotation in annotations if annotation is not None]


def _photograph(
    rng: np.random.Generator,
    image: np.ndarray,
    figures: Sequence[_Figure],
    *,
    occluder_probability: float = FOREGROUND_OCCLUDER_PROBABILITY,
    blur_probability: float = 0.25,
    label_drop_rate: float = LABEL_DROP_RATE,
) -> tuple[np.ndarray, list[dict[str, Any] | None], np.ndarray]:
    """Draw ``figures`` on ``image`` in order (later ones hide earlier ones), maybe a foreground occluder on top,
    then blur and sensor noise.

    Returns the photograph, each figure's COCO annotation (None where too little of it shows) and each figure's
    own mask (before occlusion), shared by still images and video frames.
    """
    height, width = image.shape[:2]
    masks = np.zeros((len(figures), height, width), dtype=np.uint8)
    for figure, mask in zip(figures, masks, strict=True):
        figure.draw(image, mask)

    foreground = np.zeros((height, width), dtype=np.uint8)
    if rng.random() < occluder_probability:
        occluder = _sample_distractor(rng, height, width)
        occluder.draw(image, occluder.color, cv2.LINE_AA)
        occluder.draw(foreground, (255,), cv2.LINE_8)

    if rng.random() < blur_probability:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, 6)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)

    annotations: list[dict[str, Any] | None] = [None] * len(figures)
    covered_later = foreground.copy()
    for index in reversed(range(len(figures))):
        visible = cv2.bitwise_and(masks[index], cv2.bitwise_not(covered_later))
        keypoints = _keypoint_annotation(figures[index], covered_later, visible, rng, label_drop_rate)
        covered_later |= masks[index]
        area = int(cv2.countNonZero(visible))
        if area < MIN_VISIBLE_AREA_PX:
            continue
        annotations[index] = {
            "segmentation": _polygons(visible),
            "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
            "area": float(area),
            "iscrowd": 0,
            "keypoints": keypoints,
            "bbox": [float(value) for value in cv2.boundingRect(visible)],
            "category_id": 1,
        }
    return image, annotations, masks


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per image, keyed by split name too, so train and val never share images."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _categories() -> list[dict[str, Any]]:
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[first + 1, second + 1] for first, second in SKELETON],
        }
    ]


def generate_dataset(
    out_dir: str | Path,
    num_images: int,
    *,
    split: str = "train2017",
    image_size: tuple[int, int] = (256, 256),
    max_people: int = 3,
    min_height: float = MIN_PERSON_HEIGHT,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write ``out_dir/{split}/*.jpg`` and ``out_dir/annotations/person_keypoints_{split}.json``.

    ``image_size`` is (height, width). The same arguments always produce byte-identical files.
    Returns the annotation file path.
    """
    height, width = image_size
    if num_images < 0 or max_people < 1 or seed < 0 or min(height, width) < 32:
        raise ValueError("need num_images >= 0, max_people >= 1, seed >= 0 and both image sides >= 32")
    if not 0.05 <= min_height <= MAX_PERSON_HEIGHT:
        raise ValueError(f"min_height must be between 0.05 and {MAX_PERSON_HEIGHT} of the image height")
    out_dir = Path(out_dir)
    annotation_path, image_dir = coco_split_paths(out_dir, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in tqdm(range(num_images), desc=f"synthesising {split}", disable=not progress):
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        image, people = render_image(_split_rng(seed, split, index), height, width, max_people, min_height)
        _write_jpeg(image_dir / file_name, image)
        images.append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": "",
                "height": height,
                "width": width,
                "date_captured": "",
                "flickr_url": "",
                "id": image_id,
            }
        )
        for person in people:
            annotations.append({**person, "image_id": image_id, "id": len(annotations) + 1})

    dataset = {
        "info": {
            "description": f"POET synthetic people, split {split}, seed {seed}",
            "url": "",
            "version": "1.0",
            "year": 2024,
            "contributor": "poet-edge",
            "date_created": "",
        },
        "licenses": [{"url": "", "id": 1, "name": "Synthetic, free to use"}],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    write_json(annotation_path, dataset)
    return annotation_path


def generate_splits(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    *,
    image_size: tuple[int, int] = (256, 256),
    max_people: int = 3,
    min_height: float = MIN_PERSON_HEIGHT,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write train2017 and val2017; the split name keys the random stream, so the two never overlap."""
    common: dict[str, Any] = {
        "image_size": image_size,
        "max_people": max_people,
        "min_height": min_height,
        "seed": seed,
        "progress": progress,
    }
    train = generate_dataset(out_dir, num_train, split="train2017", **common)
    val = generate_dataset(out_dir, num_val, split="val2017", **common)
    return train, val


# ---------------------------------------------------------------- videos with identities

# What poet-synth --videos writes: MOT's layout, at this frame rate (seqinfo.ini says it).
VIDEO_FPS = 30
DEFAULT_VIDEO_FRAMES = 150
# Walkers are of similar size, as people at one distance from the camera: heights spread this far above
# --min-height (fractions of the image height).
VIDEO_HEIGHT_SPREAD = 0.2
# Walking speed as a fraction of the image width per frame, and a sideways wobble on top of it: its amplitude
# (fraction of the width) and period (frames); the feet line bobs by a third of that.
WALK_SPEED = (0.005, 0.011)
WOBBLE_AMPLITUDE = (0.004, 0.015)
WOBBLE_PERIOD = (30.0, 90.0)
# The walk cycle: arms and legs swing this many degrees either way, one cycle per this many heights walked.
SWING_DEGREES = (12.0, 25.0)
STRIDE_HEIGHTS = 0.8
# Chance per frame that someone walks in while fewer than max_people are in view.
ENTRY_RATE = 1 / 45
# A walker is in view while their hips are within this many heights of the frame.
VIEW_MARGIN = 0.3
# Limbs that swing from their root joint in the walk cycle, legs against the arms.
_SWINGING_LIMBS = (("shoulder", ("elbow", "wrist", "hand"), 1.0), ("hip", ("knee", "ankle", "toe"), -1.0))


def _walking(points: dict[str, np.ndarray], swing: float) -> dict[str, np.ndarray]:
    """``points`` with each arm and leg turned rigidly about its shoulder or hip: left against right, arms
    against legs, as in a walk; bone lengths stay as they are."""
    moved = dict(points)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for root, joints, direction in _SWINGING_LIMBS:
            angle = sign * direction * swing
            rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            centre = points[f"{side}_{root}"]
            for joint in joints:
                moved[f"{side}_{joint}"] = centre + rotation @ (points[f"{side}_{joint}"] - centre)
    return moved


@dataclass(frozen=True)
class _Walker:
    """One person of a video: who they are (pose, build, clothes) and where they walk, from which frame."""

    track_id: int
    pose: _Pose
    height: float
    start: int
    x: float  # hip x at the first frame
    feet: float  # y of the lowest joint; also the drawing order (nearer the camera is lower and drawn later)
    speed: float  # px per frame, signed
    wobble: tuple[float, float, float]  # amplitude (px), period (frames), phase
    swing: float  # radians
    dress_seed: int

    def hip_x(self, frame: int) -> float:
        amplitude, period, phase = self.wobble
        steps = frame - self.start
        return self.x + self.speed * steps + amplitude * math.sin(2 * math.pi * steps / period + phase)

    def in_view(self, frame: int, width: int) -> bool:
        margin = VIEW_MARGIN * self.height
        return frame >= self.start and -margin < self.hip_x(frame) < width + margin

    def figure(self, frame: int) -> _Figure:
        """The walker at ``frame``: walk cycle, wobble and bob; the same clothes in every frame."""
        amplitude, period, phase = self.wobble
        steps = frame - self.start
        cycle = 2 * math.pi * abs(self.speed) * steps / (STRIDE_HEIGHTS * self.height)
        points = {
            name: point * self.height
            for name, point in _walking(self.pose.points, self.swing * math.sin(cycle)).items()
        }
        lowest = max(float(point[1]) for point in points.values())
        feet = self.feet + amplitude / 3 * math.cos(2 * math.pi * steps / period + phase)
        shift = np.array([self.hip_x(frame) - points["hip_mid"][0], feet - lowest])
        placed = {name: point + shift for name, point in points.items()}
        return _dressed_figure(np.random.default_rng(self.dress_seed), self.pose, placed, self.height)


def _cast(
    rng: np.random.Generator, frames: int, height: int, width: int, max_people: int, min_height: float
) -> list[_Walker]:
    """Who walks through a video: up to ``max_people`` in view at the start, those on the left walking right and
    those on the right walking left, so they cross and hide each other; then newcomers from either side while
    fewer than ``max_people`` are in view. Ids count from 1 in order of appearance."""
    walkers: list[_Walker] = []

    def walker(start: int, x: float | None, direction: float) -> _Walker:
        person_height = rng.uniform(min_height, min(min_height + VIDEO_HEIGHT_SPREAD, MAX_PERSON_HEIGHT)) * height
        if x is None:  # walking in from outside the frame
            x = -VIEW_MARGIN * person_height + 1 if direction > 0 else width + VIEW_MARGIN * person_height - 1
        return _Walker(
            track_id=len(walkers) + 1,
            pose=_sample_pose(rng),
            height=person_height,
            start=start,
            x=x,
            feet=rng.uniform(min(person_height + 2, height - 1), height - 1),
            speed=direction * rng.uniform(*WALK_SPEED) * width,
            wobble=(rng.uniform(*WOBBLE_AMPLITUDE) * width, rng.uniform(*WOBBLE_PERIOD), rng.uniform(0, 2 * math.pi)),
            swing=math.radians(rng.uniform(*SWING_DEGREES)),
            dress_seed=int(rng.integers(2**31)),
        )

    first = int(rng.integers(min(2, max_people), max_people + 1))
    for slot in range(first):
        x = width * (slot + 0.5 + rng.uniform(-0.2, 0.2)) / first
        walkers.append(walker(0, x, 1.0 if x < width / 2 else -1.0))
    for frame in range(1, frames):
        if sum(w.in_view(frame, width) for w in walkers) < max_people and rng.random() < ENTRY_RATE:
            walkers.append(walker(frame, None, float(rng.choice((-1.0, 1.0)))))
    return walkers


def _sequence_info(name: str, frames: int, height: int, width: int) -> str:
    """MOT's seqinfo.ini."""
    return (
        f"[Sequence]\nname={name}\nimDir=img1\nframeRate={VIDEO_FPS}\nseqLength={frames}\n"
        f"imWidth={width}\nimHeight={height}\nimExt=.jpg\n"
    )


def generate_videos(
    out_dir: str | Path,
    num_videos: int,
    frames: int = DEFAULT_VIDEO_FRAMES,
    *,
    image_size: tuple[int, int] = (128, 128),
    max_people: int = 3,
    min_height: float = MIN_PERSON_HEIGHT,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Short videos of people walking, with their identities, to measure tracking: one folder per video.

    People walk at a wobbling, nearly constant speed, cross, hide each other, and leave and enter the frame.
    Layout as MOT's (``out_dir/synth-001/``): ``img1/000001.jpg...``; ``gt/gt.txt``, MOT's CSV
    ``frame,id,x,y,w,h,1,1,visibility`` (1-based frames and pixels; the box is the person's whole body in the
    frame, ``visibility`` the share of it not hidden by someone nearer; a person of whom less than
    ``MIN_VISIBLE_AREA_PX`` pixels show has no row); ``gt/keypoints.json``, each frame's ``{id: 17 x [x, y, v]}``
    with COCO's 0-based pixels and visibility flags (no label skipped at random); ``seqinfo.ini``. The same
    arguments always produce byte-identical files. Returns the video folders.
    """
    height, width = image_size
    if num_videos < 0 or frames < 1 or max_people < 1 or seed < 0 or min(height, width) < 32:
        raise ValueError("need num_videos >= 0, frames >= 1, max_people >= 1, seed >= 0 and both image sides >= 32")
    if not 0.05 <= min_height <= MAX_PERSON_HEIGHT:
        raise ValueError(f"min_height must be between 0.05 and {MAX_PERSON_HEIGHT} of the image height")
    folders = []
    for index in range(num_videos):
        name = f"synth-{index + 1:03d}"
        folder = Path(out_dir) / name
        rng = _split_rng(seed, "videos", index)
        walkers = _cast(rng, frames, height, width, max_people, min_height)
        background = _background(rng, height, width)
        rows: list[str] = []
        keypoints: list[dict[str, list[list[float]]]] = []
        for frame in tqdm(range(frames), desc=f"synthesising {name}", disable=not progress):
            present = sorted((w for w in walkers if w.in_view(frame, width)), key=lambda w: w.feet)
            image, people, masks = _photograph(
                rng,
                background.copy(),
                [w.figure(frame) for w in present],
                occluder_probability=0.0,
                blur_probability=0.0,
                label_drop_rate=0.0,
            )
            _write_jpeg(folder / "img1" / f"{frame + 1:06d}.jpg", image)
            seen: dict[str, list[list[float]]] = {}
            for walker, person, mask in sorted(zip(present, people, masks, strict=True), key=lambda p: p[0].track_id):
                if person is None:
                    continue
                x, y, w, h = cv2.boundingRect(mask)
                visibility = person["area"] / cv2.countNonZero(mask)
                rows.append(f"{frame + 1},{walker.track_id},{x + 1},{y + 1},{w},{h},1,1,{visibility:.3f}")
                seen[str(walker.track_id)] = np.reshape(person["keypoints"], (len(KEYPOINT_NAMES), 3)).tolist()
            keypoints.append(seen)
        with atomic_path(folder / "gt" / "gt.txt") as tmp:
            tmp.write_text("".join(row + "\n" for row in rows))
        write_json(folder / "gt" / "keypoints.json", {"keypoint_names": list(KEYPOINT_NAMES), "frames": keypoints})
        with atomic_path(folder / "seqinfo.ini") as tmp:
            tmp.write_text(_sequence_info(name, frames, height, width))
        folders.append(folder)
    return folders


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    """``poet-synth`` command line."""
    parser = argparse.ArgumentParser(
        prog="poet-synth",
        description="Generate synthetic people with COCO person keypoints (train2017 and val2017 splits), and "
        "short videos of people walking with their identities (MOT's layout) to measure tracking.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="dataset root to write into")
    parser.add_argument(
        "--train", type=int, metavar="N", help="training images (default 1000; none when only --videos is given)"
    )
    parser.add_argument(
        "--val", type=int, metavar="N", help="validation images (default 200; none when only --videos is given)"
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=0,
        metavar="N",
        help="videos of people walking, crossing, hiding each other, leaving and entering, with ground-truth "
        "identities and keypoints, in MOT's layout: OUT_DIR/videos/synth-001/{img1,gt,seqinfo.ini} (default 0)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_VIDEO_FRAMES,
        metavar="F",
        help=f"frames per video, at {VIDEO_FPS} fps (default {DEFAULT_VIDEO_FRAMES})",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(256, 256),
        metavar=("H", "W"),
        help="image height and width (default 256 256)",
    )
    parser.add_argument(
        "--max-people", type=int, default=3, metavar="M", help="most people drawn in one image (default 3)"
    )
    parser.add_argument(
        "--min-height",
        type=float,
        default=MIN_PERSON_HEIGHT,
        metavar="F",
        help=f"smallest person as a fraction of the image height (default {MIN_PERSON_HEIGHT})",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    add_progress(parser)
    args = parser.parse_args(argv)
    only_videos = args.videos > 0 and args.train is None and args.val is None
    train = (0 if only_videos else 1000) if args.train is None else args.train
    val = (0 if only_videos else 200) if args.val is None else args.val
    if min(train, val, args.videos, args.seed) < 0 or args.max_people < 1 or args.frames < 1 or min(args.size) < 32:
        parser.error("counts and seed must be >= 0, --max-people and --frames >= 1 and both --size values >= 32")
    common: dict[str, Any] = {
        "image_size": (args.size[0], args.size[1]),
        "max_people": args.max_people,
        "min_height": args.min_height,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    paths = [] if only_videos else list(generate_splits(args.out_dir, train, val, **common))
    paths += generate_videos(args.out_dir / "videos", args.videos, args.frames, **common)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
