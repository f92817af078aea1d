"""A served model's Triton description: its tensors, its ``config.pbtxt``, and a model repository for NVIDIA's
Triton container.

The same description serves ``poet-serve`` (PyTriton) and ``tritonserver --model-repository DIR``: inputs and
outputs under the graph's names, types and per-image dimensions, the batch the model allows, dynamic batching,
the instances, and the model info as the config parameter :data:`poet.modelinfo.METADATA_KEY`, which is all a
client (:class:`poet.runtime.triton_backend.TritonBackend`) needs besides the URL. The config is built with
Triton's own protobuf (``tritonclient.grpc.model_config_pb2``, the ``client`` extra), so it cannot stray from
Triton's schema.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poet.errors import ModelError, OutputError
from poet.extras import missing_extra
from poet.fileio import atomic_path
from poet.modelinfo import IMAGES, MASK, METADATA_KEY, UINT8_NHWC, ModelInfo
from poet.processing import KEYPOINT_OUTPUTS, NUM_CLASSES
from poet.runtime.backends import backend_name, load_backend
from poet.skeleton import NUM_KEYPOINTS

VERSION = "1"
# Triton's element type for each numpy type the graphs use.
TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
# poet-edge backend -> (how the config names Triton's backend, the model file that backend looks for by default).
REPOSITORY_BACKENDS = {
    "onnxruntime": ({"backend": "onnxruntime"}, "model.onnx"),
    "openvino": ({"backend": "openvino"}, "model.xml"),
    "tensorrt": ({"platform": "tensorrt_plan"}, "model.plan"),
}
# A model file's suffix -> its name in the version folder.
REPOSITORY_FILES = {".onnx": "model.onnx", ".xml": "model.xml", ".engine": "model.plan", ".plan": "model.plan"}
# Triton's backends read their thread count from these parameters.
THREAD_PARAMETERS = {"onnxruntime": "intra_op_thread_count", "openvino": "INFERENCE_NUM_THREADS"}
# A lone request does not wait for company: batches are what is queued when an instance is free (docs/serving.md).
DEFAULT_QUEUE_DELAY_US = 0


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, numpy element type and dimensions per image (the batch left out)."""

    name: str
    dtype: str
    dims: tuple[int, ...]


def model_tensors(info: ModelInfo) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs every poet-edge graph has (:mod:`poet.modelinfo`'s contract), per image."""
    height, width = info.preprocess.input_size
    images = (
        TensorSpec(IMAGES, "uint8", (height, width, 3))
        if info.input_format == UINT8_NHWC
        else TensorSpec(IMAGES, "float32", (3, height, width))
    )
    inputs = [images, TensorSpec(MASK, "bool", (height, width))]
    queries = info.num_queries
    if info.decoded:
        outputs = [
            TensorSpec("scores", "float32", (queries,)),
            TensorSpec("keypoints", "float32", (queries, NUM_KEYPOINTS, 3)),
        ]
    else:
        outputs = [
            TensorSpec("pred_logits", "float32", (queries, NUM_CLASSES + 1)),
            TensorSpec("pred_kpts", "float32", (queries, KEYPOINT_OUTPUTS)),
        ]
    return inputs, outputs


def model_config_pb2() -> Any:
    """Triton's ModelConfig protobuf module, as tritonclient ships it; without it, the line naming the extra."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ModuleNotFoundError as error:
        raise (missing_extra(error, "a Triton model config", ["client"]) or error) from None
    return model_config_pb2


def triton_config(
    name: str,
    info: ModelInfo,
    backend: str,
    *,
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    device: int = 0,
    threads: int | None = None,
    model_file: str | None = None,
) -> Any:
    """The ``ModelConfig`` message of a poet-edge model for Triton's own backend ``backend``.

    A dynamic batch (``batch`` None) becomes ``max_batch_size`` = its largest batch, with dynamic batching
    (``max_queue_delay_us``: how long the first request of a batch may wait for others). A fixed batch cannot
    be batched by Triton's backends: ``max_batch_size`` 0, the batch in the dimensions, and requests carry
    exactly that batch. TensorRT instances are on GPU ``device``, the others on the CPU.
    """
    pb2 = model_config_pb2()
    where, default_file = REPOSITORY_BACKENDS[backend]
    config = pb2.ModelConfig(name=name, **where)
    if model_file is not None and model_file != default_file:
        config.default_model_filename = model_file
    batched = info.batch is None
    config.max_batch_size = info.max_batch if batched else 0
    prefix = () if batched else (info.batch,)
    inputs, outputs = model_tensors(info)
    for spec in inputs:
        config.input.add(name=spec.name, data_type=TRITON_TYPES[spec.dtype], dims=prefix + spec.dims)
    for spec in outputs:
        config.output.add(name=spec.name, data_type=TRITON_TYPES[spec.dtype], dims=prefix + spec.dims)
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    group = config.instance_group.add(count=instances)
    if backend == "tensorrt":
        group.kind = pb2.ModelInstanceGroup.KIND_GPU
        group.gpus.append(device)
    else:
        group.kind = pb2.ModelInstanceGroup.KIND_CPU
    if threads is not None and backend in THREAD_PARAMETERS:
        config.parameters[THREAD_PARAMETERS[backend]].string_value = str(threads)
    config.parameters[METADATA_KEY].string_value = info.to_json()
    return config


def config_text(config: Any) -> str:
    """A ``ModelConfig`` as the ``config.pbtxt`` text Triton reads."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def model_info_of(path: Path, backend: str) -> ModelInfo:
    """The model info of a file to serve, checked as loading it would check it.

    An engine's sidecar is read and checked (TensorRT need not be installed here: the engine runs on the
    GPU server); an ONNX or IR file is opened by its backend, which checks its graph against its metadata.
    """
    if backend == "tensorrt":
        from poet.runtime.compat import read_sidecar

        if not path.is_file():
            raise ModelError(f"engine {path} not found")
        return read_sidecar(path)
    return load_backend(path, backend).info


def write_repository(
    model: str | Path,
    folder: str | Path,
    *,
    name: str = "poet",
    backend: str = "auto",
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    device: int = 0,
    threads: int | None = None,
) -> Path:
    """Write ``folder/name/config.pbtxt`` and ``folder/name/1/<model file>`` for ``tritonserver``; returns the
    config's path.

    Each file is written to a temporary name and renamed into place, the model before its config, so a server
    watching the folder never sees a config without its model; files of another format a previous write left
    in the version folder are removed.
    """
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model {path} not found")
    chosen = backend_name(path, backend)
    info = model_info_of(path, chosen)
    file_name = REPOSITORY_FILES.get(path.suffix.lower())
    if file_name is None:
        raise ModelError(f"{path}: a model repository takes {', '.join(REPOSITORY_FILES)} files")
    files = [(path, file_name)]
    if path.suffix.lower() == ".xml":  # an OpenVINO IR: its weights beside it
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelError(f"OpenVINO IR {path} has no weights file {weights.name} beside it")
        files.append((weights, "model.bin"))
    config = triton_config(
        name,
        info,
        chosen,
        instances=instances,
        max_queue_delay_us=max_queue_delay_us,
        device=device,
        threads=threads,
        model_file=files[0][1],
    )
    model_folder = Path(folder) / name
    if model_folder.exists() and not model_folder.is_dir():
        raise OutputError(f"--write-repository: {model_folder} is a file; expected a folder for model {name!r}")
    version = model_folder / VERSION
    for source, target in files:
        with atomic_path(version / target) as temporary:
            shutil.copyfile(source, temporary)
    written = {target for _, target in files}
    for stale in ("model.onnx", "model.plan", "model.xml", "model.bin"):
        if stale not in written:
            (version / stale).unlink(missing_ok=True)
    with atomic_path(model_folder / "config.pbtxt") as temporary:
        temporary.write_text(config_text(config), encoding="utf-8")
    return model_folder / "config.pbtxt"
