"""Poses from an exported POET: the model's own preprocessing, any backend, the shared decoding.

:class:`PoseEstimator` has the stages of :class:`poet.pipeline.PosePipeline`, as the torch ``Predictor`` does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from poet.images import ImageInput, check_arrays, load_images
from poet.modelinfo import UINT8_NHWC, ModelInfo
from poet.processing import (
    Letterbox,
    Pose,
    decode_poses,
    fill_batch,
    letterbox_batch,
    poses_from_decoded,
    preprocess,
)
from poet.runtime.backends import Backend, Provider, load_backend


class PoseEstimator:
    """Run a poet-edge ONNX model, OpenVINO IR or TensorRT engine on images, without PyTorch.

    ``backend="auto"`` picks by suffix: ``.onnx`` -> ONNX Runtime (execution providers TensorRT,
    CUDA, CPU, whichever are installed, unless ``providers`` lists them), ``.engine``/``.plan`` ->
    TensorRT (the engine's JSON sidecar is checked against this GPU and TensorRT first), ``.xml`` ->
    OpenVINO. ``backend="openvino"`` runs an ``.onnx`` in OpenVINO on the CPU, in ``precision`` ``fp32``
    (the default) or ``bf16``. ``"grpc://HOST:PORT/NAME"`` or ``"http://HOST:PORT/NAME"`` runs inference on
    that Triton Inference Server (``poet-serve``, or NVIDIA's container with a repository ``poet-serve
    --write-repository`` wrote), each request bounded by ``timeout`` seconds; letterboxing and decoding stay
    here. Letterbox size, normalisation and channel order come from the model's :class:`ModelInfo` (for a URL,
    from the served model's config), so poses match the trained model.

    Safe to share between threads: the reusable uint8 input buffers are per thread, ONNX Runtime runs
    concurrent calls on one session, OpenVINO gives each thread its own infer request, and backends that
    are not thread-safe (TensorRT: one execution context, stream and set of pinned buffers) run one call at
    a time under a lock. Per-thread buffers
    cost nothing measurable: ``predict_arrays`` of one 640x480 frame with the small uint8 test model took
    1.00x the time of the shared-buffer version (docs/runtime.md, "Threads").
    """

    def __init__(
        self,
        path: str | Path,
        backend: str = "auto",
        *,
        providers: Sequence[Provider] | None = None,
        score_threshold: float = 0.5,
        max_people: int | None = None,
        threads: int | None = None,
        spinning: bool = True,
        device: int = 0,
        cuda_graph: bool = False,
        precision: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.backend: Backend = load_backend(
            path,
            backend,
            providers=providers,
            threads=threads,
            spinning=spinning,
            device=device,
            cuda_graph=cuda_graph,
            precision=precision,
            timeout=timeout,
        )
        self.score_threshold = score_threshold
        self.max_people = max_people
        self._local = threading.local()  # this thread's uint8 input buffers, by batch size
        self._infer_lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if getattr(self.backend, "thread_safe", False) else threading.Lock()
        )

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @overload  # a str is also a Sequence: the first overload wins for it, as predict does at run time
    def predict(self, images: ImageInput, rgb: bool = False) -> list[Pose]: ...  # type: ignore[overload-overlap]

    @overload
    def predict(self, images: Sequence[ImageInput], rgb: bool = False) -> list[list[Pose]]: ...

    def predict(self, images: ImageInput | Sequence[ImageInput], rgb: bool = False) -> list[Pose] | list[list[Pose]]:
        """One image -> its poses; a list of images -> a list of pose lists.

        An image is a path or an HxWx3 uint8 array in OpenCV's BGR order (``rgb=True`` for RGB
        arrays); grayscale, alpha and 16-bit images are converted with a warning. Anything else (None from a
        failed ``cv2.imread``, float pixels, 2 or 5 channels, a 4-D batch array) is an :class:`ImageError`
        saying what was expected and what was given.
        """
        arrays, single = load_images(images, rgb)
        poses = self._predict_arrays(arrays)
        return poses[0] if single else poses

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        """Poses for HxWx3 BGR uint8 images, in chunks the model's batch size allows; anything else is refused."""
        check_arrays(images)
        return self._predict_arrays(images)

    def _predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        poses: list[list[Pose]] = []
        for start in range(0, len(images), self.backend.max_batch):
            chunk = images[start : start + self.backend.max_batch]
            inputs, letterboxes = self.prepare(chunk)
            poses.extend(self.decode(self.infer(inputs), letterboxes))
        return poses

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], list[Letterbox]]:
        """BGR uint8 images -> the model's ``(images, mask)`` inputs, padded to a fixed batch if it has one.

        Padding slots are black images without padding (an all-padding mask would leave attention
        nothing to attend to); their outputs are dropped by :meth:`decode`.
        """
        count = len(images)
        if count > self.backend.max_batch:
            raise ValueError(f"{count} images exceed the model's batch of {self.backend.max_batch}; use predict_arrays")
        size = self.info.batch or count
        if self.info.input_format == UINT8_NHWC:
            batch, mask = self._buffer(size)
            _, _, letterboxes = letterbox_batch(
                images, self.info.preprocess.input_size, out=(batch[:count], mask[:count])
            )
            batch[count:] = 0
            mask[count:] = False
            return (batch, mask), letterboxes
        batch, mask, letterboxes = preprocess(images, self.info.preprocess)
        return fill_batch(batch, mask, size), letterboxes

    def infer(self, inputs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend on prepared ``(images, mask)`` inputs -> its outputs by name, on the host."""
        with self._infer_lock:
            return self.backend.infer(*inputs)

    def _buffer(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """This thread's reusable uint8 input batch and mask for ``size`` images, allocated on first use.

        Per thread, so two threads sharing the estimator never letterbox into the same array.
        """
        buffers: dict[int, tuple[np.ndarray, np.ndarray]] | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        if size not in buffers:
            height, width = self.info.preprocess.input_size
            buffers[size] = (np.zeros((size, height, width, 3), np.uint8), np.zeros((size, height, width), bool))
        return buffers[size]

    def decode(self, outputs: dict[str, np.ndarray], letterboxes: Sequence[Letterbox]) -> list[list[Pose]]:
        """Backend outputs -> poses in original-image pixels, one list per letterboxed image."""
        if self.info.decoded:
            scores, keypoints = (outputs[name] for name in self.info.output_names)
            return [
                poses_from_decoded(scores[i], keypoints[i], box, self.score_threshold, self.max_people)
                for i, box in enumerate(letterboxes)
            ]
        logits, kpts = (outputs[name] for name in self.info.output_names)
        return [
            decode_poses(logits[i], kpts[i], box.original_size, self.score_threshold, self.max_people)
            for i, box in enumerate(letterboxes)
        ]
