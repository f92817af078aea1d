"""PyTorch POET -> ONNX with the padding mask as an input, checked against PyTorch before it is written.

The graph follows the contract in :mod:`poet.modelinfo`: inputs ``images`` and ``mask``, outputs
``pred_logits``/``pred_kpts`` (or ``scores``/``keypoints`` when decoding is in the graph), and the
:class:`~poet.modelinfo.ModelInfo` JSON in the ONNX metadata so the runtime never guesses preprocessing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch
from torch import nn
from tqdm import tqdm

from poet.checkpoint import model_from_checkpoint, read_checkpoint
from poet.errors import PoetError
from poet.fileio import atomic_path, check_not_input, check_writable, sha256_file
from poet.keypoints import split_predicted_keypoints
from poet.model.poet import POET
from poet.modelinfo import (
    DECODED_OUTPUTS,
    FLOAT_NCHW,
    IMAGES,
    MASK,
    RAW_OUTPUTS,
    UINT8_NHWC,
    ModelInfo,
    write_model_info,
)
from poet.optimize.tensorrt_check import tensorrt_verdict
from poet.processing import NUM_CLASSES, PERSON_CLASS, PreprocessConfig, letterbox_batch, preprocess
from poet.synthetic import render_image

FP32_TOLERANCE = 1e-4
MIN_OPSET = 17
# Portrait and landscape photographs, so the verification batch always has right and bottom padding.
_VERIFY_SHAPES = ((480, 320), (300, 500))


class ExportError(PoetError):
    """An export that cannot be written or whose ONNX does not reproduce PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    """The written ONNX, what it holds, and how far ONNX Runtime was from PyTorch on the check batch."""

    path: Path
    info: ModelInfo
    max_abs_diff: float


class InputNormalize(nn.Module):
    """uint8 BGR NHWC -> normalised RGB NCHW, zeroed on padding like :func:`poet.processing.pad_batch`.

    Same arithmetic as :func:`poet.processing.normalize` (``pixel * gain + offset``), so the graph
    reproduces the float path; a module of its own so its nodes are named ``/normalize/...``. The input is
    cast to float before anything else touches it: TensorRT takes UINT8 only as a network input or output,
    so the BGR->RGB flip must slice a float tensor, never a uint8 one.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        std = torch.tensor(config.std, dtype=torch.float32)
        self.gain: torch.Tensor
        self.offset: torch.Tensor
        self.register_buffer("gain", 1.0 / (255.0 * std))
        self.register_buffer("offset", -torch.tensor(config.mean, dtype=torch.float32) / std)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rgb = images.to(torch.float32).flip(-1) * self.gain + self.offset
        return rgb.permute(0, 3, 1, 2) * (~mask).unsqueeze(1).to(torch.float32)


class Decode(nn.Module):
    """Raw outputs -> person score per query and keypoints in letterboxed-input pixels.

    The torch twin of :func:`poet.processing.person_scores` and :func:`decode_keypoints`, reading the 53
    values through :mod:`poet.keypoints`; the size of the unpadded region comes from the mask (its first
    row and column, as the letterbox is top-left).
    """

    def forward(
        self, logits: torch.Tensor, kpts: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probs = logits.softmax(-1)[..., :NUM_CLASSES]
        score, label = probs.max(-1)
        scores = torch.where(label == PERSON_CLASS, score, torch.zeros_like(score))
        people = split_predicted_keypoints(kpts)
        valid = (~mask).to(torch.float32)
        size = torch.stack((valid[:, 0, :].sum(-1), valid[:, :, 0].sum(-1)), dim=-1)
        xy = people.absolute() * size[:, None, None, :]
        return scores, torch.cat((xy, people.visibilities.unsqueeze(-1)), dim=-1)


class ExportWrapper(nn.Module):
    """POET with the deployed tensor contract: (images, mask) -> two outputs, aux outputs dropped."""

    def __init__(self, model: POET, preprocess_config: PreprocessConfig, uint8_input: bool, decode: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = InputNormalize(preprocess_config) if uint8_input else None
        self.decode = Decode() if decode else None

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize is not None:
            images = self.normalize(images, mask)
        outputs = self.model(images, mask)
        logits, kpts = outputs["pred_logits"], outputs["pred_kpts"]
        assert isinstance(logits, torch.Tensor) and isinstance(kpts, torch.Tensor)
        if self.decode is not None:
            return self.decode(logits, kpts, mask)
        return logits, kpts


def verification_batch(info: ModelInfo, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic people of portrait and landscape shapes letterboxed as the runtime does, with their mask."""
    rng = np.random.default_rng(0)
    images = [render_image(rng, *_VERIFY_SHAPES[i % len(_VERIFY_SHAPES)], max_people=3)[0] for i in range(batch_size)]
    if info.input_format == UINT8_NHWC:
        pixels, mask, _ = letterbox_batch(images, info.preprocess.input_size)
        return pixels, mask
    batch, mask, _ = preprocess(images, info.preprocess)
    return batch, mask


def _comparable(outputs: list[np.ndarray], info: ModelInfo) -> list[np.ndarray]:
    """Decoded keypoints as fractions of the input, so the 1e-4 bound means the same for any input size."""
    if not info.decoded:
        return outputs
    height, width = info.preprocess.input_size
    keypoints = outputs[1] / np.array([width, height, 1.0], dtype=np.float32)
    return [outputs[0], keypoints]


def max_difference(wrapper: nn.Module, model: onnx.ModelProto, info: ModelInfo, batch_size: int) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and PyTorch on one letterboxed batch."""
    import onnxruntime as ort

    images, mask = verification_batch(info, batch_size)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(info.output_names), {IMAGES: images, MASK: mask})
    with torch.inference_mode():
        torch_outputs = [t.numpy() for t in wrapper(torch.from_numpy(images), torch.from_numpy(mask))]
    pairs = zip(_comparable(torch_outputs, info), _comparable([np.asarray(o) for o in onnx_outputs], info), strict=True)
    return max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in pairs)


def _load_source(
    source: str | Path | POET, input_size: tuple[int, int] | None
) -> tuple[POET, PreprocessConfig, dict[str, str]]:
    """The model in eval mode, its preprocessing (``input_size`` applied, the module left as it is), provenance."""
    provenance: dict[str, str]
    if isinstance(source, POET):
        model, provenance = source, {"source": "in-memory POET module"}
    else:
        path = Path(source)
        checkpoint = read_checkpoint(path)
        model = model_from_checkpoint(checkpoint, path)
        provenance = {
            "source": str(path.resolve()),
            "source_sha256": sha256_file(path),
            "source_format": checkpoint.source_format,
        }
    config = model.preprocess
    if input_size is not None:
        config = PreprocessConfig((int(input_size[0]), int(input_size[1])), config.mean, config.std)
    return model.eval(), config, provenance


def export_onnx(
    source: str | Path | POET,
    output: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = 1,
    max_batch: int = 1,
    uint8_input: bool = False,
    decode: bool = False,
    opset: int = 17,
    verify: bool = True,
    progress: bool = True,
) -> ExportResult:
    """Export a checkpoint (ours or the authors') or a POET module (put in eval mode) to a simplified, checked ONNX.

    ``batch=None`` gives a dynamic batch dimension named ``batch`` (at most ``max_batch``). With
    ``verify`` the ONNX is run by ONNX Runtime on a letterboxed batch with padding and compared with
    PyTorch; above :data:`FP32_TOLERANCE` it raises :class:`ExportError` and writes nothing.
    """
    output = Path(output)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: POET needs opset {MIN_OPSET} or newer (LayerNormalization)")
    if (batch is not None and batch < 1) or max_batch < 1:
        raise ExportError(f"batch and max_batch must be at least 1, got {batch} and {max_batch}")
    check_writable(output)
    check_not_input(output, None if isinstance(source, POET) else source)
    model, preprocess_config, provenance = _load_source(source, input_size)
    info = ModelInfo(
        preprocess=preprocess_config,
        num_queries=model.config.num_queries,
        input_format=UINT8_NHWC if uint8_input else FLOAT_NCHW,
        batch=batch,
        max_batch=batch if batch is not None else max_batch,
        decoded=decode,
        extra={**provenance, "opset": opset},
    )
    wrapper = ExportWrapper(model, preprocess_config, uint8_input, decode).eval()
    sample_batch = batch if batch is not None else min(2, max_batch)
    steps = tqdm(total=4, desc=f"exporting {output.name}", unit="step", disable=not progress, leave=False)
    with steps:
        graph = _trace(wrapper, info, sample_batch, opset)
        steps.update()
        graph = onnxslim.slim(graph)
        info = info.replace(extra={**info.extra, "tensorrt_check": tensorrt_verdict(graph, output)})
        write_model_info(graph, info)
        steps.update()
        try:
            onnx.checker.check_model(graph, full_check=True)
        except onnx.checker.ValidationError as error:
            raise ExportError(f"the exported graph fails onnx.checker: {error}") from error
        steps.update()
        difference = max_difference(wrapper, graph, info, sample_batch) if verify else float("nan")
        steps.update()
    if verify and not difference <= FP32_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {difference:.3g} (> {FP32_TOLERANCE}) on the check batch; "
            f"nothing was written to {output}"
        )
    with atomic_path(output) as tmp:
        onnx.save(graph, tmp)
    return ExportResult(path=output, info=info, max_abs_diff=difference)


def _trace(wrapper: ExportWrapper, info: ModelInfo, batch_size: int, opset: int) -> onnx.ModelProto:
    """TorchScript-based export: it names nodes by module path (``/transformer/...``, ``/class_embed/...``).

    The dynamo exporter reproduces PyTorch as closely, but its node names lose the module path that
    :mod:`poet.optimize.precision` uses to keep the heads, attention and residual adds in float.
    """
    images, mask = verification_batch(info, batch_size)
    names = [IMAGES, MASK, *(DECODED_OUTPUTS if info.decoded else RAW_OUTPUTS)]
    buffer = io.BytesIO()  # torch accepts a file object though its annotation says path
    # The tracer warns about the model's shape checks and aux-output loop; both are constant for one export.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (torch.from_numpy(images), torch.from_numpy(mask)),
            buffer,  # type: ignore[arg-type]
            input_names=names[:2],
            output_names=names[2:],
            dynamic_axes={name: {0: "batch"} for name in names} if info.batch is None else None,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return onnx.load_model_from_string(buffer.getvalue())
