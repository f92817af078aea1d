"""What a deployed POET model needs in order to be run, stored with the model itself.

The exporter writes it into the ONNX file (metadata key :data:`METADATA_KEY`) and ``poet-build-engine``
into the engine's JSON sidecar; the runtime reads it back, so preprocessing comes from the model and
never from the runtime's own defaults. Torch-free: the runtime imports it.

Tensor contract of every exported model:

* input ``images``: ``float32 [B,3,H,W]`` RGB normalised as :func:`poet.processing.preprocess` makes it
  (``input_format == FLOAT_NCHW``), or ``uint8 [B,H,W,3]`` BGR letterboxed pixels with normalisation in
  the graph (``input_format == UINT8_NHWC``); padding is top-left letterbox, bottom/right.
* input ``mask``: ``bool [B,H,W]``, True on padding, exactly :func:`poet.processing.pad_batch`'s mask.
* outputs, raw (``decoded == False``): ``pred_logits float32 [B,Q,3]``, ``pred_kpts float32 [B,Q,53]``.
* outputs, decoded in the graph (``decoded == True``): ``scores float32 [B,Q]`` (person score, 0 for
  queries not labelled person) and ``keypoints float32 [B,Q,17,3]``: x, y in input pixels of the
  letterboxed image, then the visibility score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poet.checks import describe
from poet.errors import ModelError
from poet.processing import PreprocessConfig

if TYPE_CHECKING:
    import onnx

METADATA_KEY = "poet_edge"
FORMAT_VERSION = 1

IMAGES = "images"
MASK = "mask"
RAW_OUTPUTS = ("pred_logits", "pred_kpts")
DECODED_OUTPUTS = ("scores", "keypoints")

FLOAT_NCHW = "float32-nchw-rgb"
UINT8_NHWC = "uint8-nhwc-bgr"
INPUT_FORMATS = (FLOAT_NCHW, UINT8_NHWC)
PRECISIONS = ("fp32", "fp16", "int8")
INT8_TARGETS = ("tensorrt", "cpu", "openvino")


@dataclass(frozen=True)
class ModelInfo:
    """Preprocessing, tensor layout and provenance of one exported POET model or engine.

    ``batch`` is the fixed batch size, or None for a dynamic batch of at most ``max_batch``.
    ``target`` says which INT8 layout an int8 model has (None for fp32/fp16). ``float_ops`` lists
    the op types kept in FP32 by a reduced-precision variant; ``extra`` holds free-form provenance
    (source checkpoint and its sha256, calibration summary, TensorRT version and GPU for engines).
    """

    preprocess: PreprocessConfig
    num_queries: int
    input_format: str = FLOAT_NCHW
    batch: int | None = 1
    max_batch: int = 1
    precision: str = "fp32"
    target: str | None = None
    decoded: bool = False
    float_ops: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.target is not None and self.target not in INT8_TARGETS:
            raise ValueError(f"target must be one of {INT8_TARGETS} or None, got {self.target!r}")
        if (self.batch is not None and self.batch < 1) or self.max_batch < 1:
            raise ValueError(f"batch and max_batch must be at least 1, got {self.batch}, {self.max_batch}")

    @property
    def output_names(self) -> tuple[str, str]:
        return DECODED_OUTPUTS if self.decoded else RAW_OUTPUTS

    def replace(self, **changes: Any) -> ModelInfo:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "preprocess": self.preprocess.to_dict(),
            "num_queries": self.num_queries,
            "input_format": self.input_format,
            "inputs": [IMAGES, MASK],
            "outputs": list(self.output_names),
            "batch": self.batch,
            "max_batch": self.max_batch,
            "precision": self.precision,
            "target": self.target,
            "decoded": self.decoded,
            "float_ops": list(self.float_ops),
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming the first missing or bad field.

        Every field is checked for its type and range (booleans are not numbers, numbers are finite), and
        the fields for their agreement (a fixed ``batch`` is also ``max_batch``; ``outputs`` are those
        ``decoded`` says), so a hand-edited or damaged file fails here, naming the field, and not later.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"model info must be a JSON object, got {describe(data)}")
        version = data.get("format_version")
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise ValueError(f"model info format_version {version!r} is not the supported {FORMAT_VERSION}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"model info lacks the field {missing[0]!r}")
        preprocess = PreprocessConfig.from_dict(data["preprocess"], "preprocess")
        num_queries = _whole(data["num_queries"], "num_queries", 1)
        input_format = _choice(data["input_format"], "input_format", INPUT_FORMATS)
        batch = None if data["batch"] is None else _whole(data["batch"], "batch (null for a dynamic batch)", 1)
        max_batch = _whole(data["max_batch"], "max_batch", 1)
        if batch is not None and max_batch != batch:
            raise ValueError(f"batch {batch} is fixed, so max_batch must be {batch} too, got {max_batch}")
        precision = _choice(data["precision"], "precision", PRECISIONS)
        target = data.get("target")
        if target is not None:
            target = _choice(target, "target (null unless int8)", INT8_TARGETS)
        decoded = data["decoded"]
        if not isinstance(decoded, bool):
            raise ValueError(f"decoded must be true or false, got {describe(decoded)}")
        float_ops = data.get("float_ops", [])
        if not isinstance(float_ops, list) or not all(isinstance(op, str) for op in float_ops):
            raise ValueError(f"float_ops must be a list of op type names, got {describe(float_ops)}")
        extra = data.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ValueError(f"extra must be a JSON object, got {describe(extra)}")
        expected = {"inputs": [IMAGES, MASK], "outputs": list(DECODED_OUTPUTS if decoded else RAW_OUTPUTS)}
        for name, names in expected.items():
            if name in data and data[name] != names:
                raise ValueError(f"{name} must be {names} (decoded is {str(decoded).lower()}), got {data[name]!r}")
        return cls(
            preprocess=preprocess,
            num_queries=num_queries,
            input_format=input_format,
            batch=batch,
            max_batch=max_batch,
            precision=precision,
            target=target,
            decoded=decoded,
            float_ops=tuple(float_ops),
            extra=dict(extra),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """:meth:`from_dict` of a JSON text; ValueError (one line, with the position) for text that is not JSON."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno} column {error.colno}"
            raise ValueError(f"model info is not valid JSON ({error.msg} at {where})") from None
        return cls.from_dict(data)


_REQUIRED = ("preprocess", "num_queries", "input_format", "batch", "max_batch", "precision", "decoded")


def _whole(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {describe(value)}")
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {describe(value)}")
    return value


def info_from_metadata(metadata: Mapping[str, str], source: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` in an ONNX file's metadata (as onnx or onnxruntime list it); ModelError otherwise.

    The one check, shared by export, precision variants, the engine builder and the runtime, that a file is a
    poet-edge model and not some other ONNX.
    """
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise ModelError(
            f"{source} is not a poet-edge model: its ONNX metadata has no {METADATA_KEY!r} entry "
            "(export POET checkpoints with poet-export; ONNX files of other models cannot be used)"
        )
    try:
        return ModelInfo.from_json(text)
    except ValueError as error:
        raise ModelError(f"{source}: damaged {METADATA_KEY!r} metadata: {error}") from None


def load_onnx(path: str | Path, weights: bool = True) -> tuple[onnx.ModelProto, ModelInfo]:
    """A poet-edge ONNX file and its ModelInfo; one clear error for a missing file, a non-ONNX or another model.

    ``weights=False`` leaves external weight files unread, for callers that need only the metadata. onnx is
    imported here, so the runtime, which never reads ONNX files this way, does not need it.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as error:  # onnx raises DecodeError and friends for files that are not ONNX
        raise ModelError(f"{path} is not a readable ONNX file ({type(error).__name__})") from None
    return model, info_from_metadata({prop.key: prop.value for prop in model.metadata_props}, path)


def read_onnx_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` stored in a poet-edge ONNX file, without loading its weights."""
    return load_onnx(path, weights=False)[1]


def write_model_info(model: onnx.ModelProto, info: ModelInfo) -> None:
    """Store ``info`` in an ONNX model's metadata under :data:`METADATA_KEY`, replacing any earlier entry."""
    kept = [prop for prop in model.metadata_props if prop.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
