"""poet-build-engine without TensorRT, the sidecar and compatibility check, and build_engine's own decisions.

No machine here has TensorRT or a GPU. The TensorRT calls are type-checked against tensorrt-stubs by mypy;
these tests cover what is ours: the messages, the batch profile, precision accounting from the engine
inspector, and, against a small recording stand-in for the ``tensorrt`` module, which flags, shapes and
files ``build_engine`` produces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import types
import weakref
from enum import IntEnum
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from poet.errors import ModelError, OutputError
from poet.modelinfo import METADATA_KEY, ModelInfo, read_onnx_info
from poet.optimize import engine as engine_module
from poet.optimize.build_cli import main as build_main
from poet.optimize.engine import (
    EngineBuildError,
    batch_profile,
    build_engine,
    layer_precisions,
    precision_shortfall,
    profile_shapes,
)
from poet.optimize.tensorrt_check import GraphCheckError
from poet.processing import PreprocessConfig
from poet.runtime import tensorrt_log
from poet.runtime.compat import (
    EngineCompatibilityError,
    EngineTarget,
    HostPlatform,
    TensorRTUnavailable,
    TensorRTVersionError,
    check_compatibility,
    has_dla,
    host_platform,
    l4t_release,
    read_sidecar,
    rebuild_command,
    require_tensorrt,
    sidecar_path,
    write_sidecar,
)
from poet.runtime.cuda_memory import DeviceInfo


def tensorrt_installed() -> bool:
    try:
        require_tensorrt()
    except TensorRTUnavailable:
        return False
    return True


def make_onnx(path: Path, *, precision: str = "fp32", batch: int | None = None, max_batch: int = 4) -> Path:
    """A small poet-edge ONNX: the real input/output contract and metadata, a trivial graph."""
    size = 64
    batch_dim: int | str = batch if batch is not None else "batch"
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["pooled"], keepdims=0),
            helper.make_node("Identity", ["logits_init"], ["pred_logits"]),
            helper.make_node("Identity", ["kpts_init"], ["pred_kpts"]),
        ],
        "tiny",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch_dim, 3, size, size]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [batch_dim, size, size]),
        ],
        [
            helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [1, 2, 3]),
            helper.make_tensor_value_info("pred_kpts", TensorProto.FLOAT, [1, 2, 53]),
        ],
        [
            helper.make_tensor("logits_init", TensorProto.FLOAT, [1, 2, 3], [0.0] * 6),
            helper.make_tensor("kpts_init", TensorProto.FLOAT, [1, 2, 53], [0.5] * 106),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        preprocess=PreprocessConfig(input_size=(size, size)),
        num_queries=2,
        batch=batch,
        max_batch=batch or max_batch,
        precision=precision,
        target="tensorrt" if precision == "int8" else None,
        extra={"source": {"checkpoint": "tiny.pth", "sha256": "ab" * 32}, "calibration": {"images": 8}},
    )
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    onnx.save(model, path)
    return path


def engine_info(version: str = "10.3.0", gpu: str = "Orin", capability: str = "8.7") -> ModelInfo:
    return ModelInfo(
        preprocess=PreprocessConfig(input_size=(64, 64)),
        num_queries=2,
        precision="int8",
        target="tensorrt",
        batch=None,
        max_batch=4,
        extra={
            "onnx": {"path": "model.int8-tensorrt.onnx", "sha256": "00"},
            "tensorrt": {"version": version, "gpu_name": gpu, "compute_capability": capability},
        },
    )


# --- TensorRT missing -------------------------------------------------------------------------------------------


def test_missing_tensorrt_names_the_install_commands(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable) as error:
        require_tensorrt()
    message = str(error.value)
    assert 'pip install "poet-edge[tensorrt]"' in message
    assert "python3 -m venv --system-site-packages" in message and "python3-libnvinfer" in message


def test_a_stub_only_tensorrt_package_counts_as_missing(tmp_path, monkeypatch):
    """tensorrt-stubs installs a bare tensorrt/ folder that imports as an empty namespace package."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(TensorRTUnavailable, match="only a stub package"):
        require_tensorrt()


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed: the CLI would build the engine")
def test_build_engine_cli_without_tensorrt_writes_the_onnx_and_prints_the_target_command(
    tiny_checkpoint, tmp_path, capsys
):
    engine = tmp_path / "out" / "tiny.engine"
    assert build_main([str(tiny_checkpoint), "--fp32", "--max-batch", "2", "-o", str(engine), "--no-progress"]) == 2
    onnx_path = tmp_path / "out" / "tiny.onnx"
    info = read_onnx_info(onnx_path)
    assert (info.batch, info.max_batch, info.precision) == (None, 2, "fp32")
    assert not engine.exists() and not sidecar_path(engine).exists()
    lines = capsys.readouterr().err.strip().splitlines()
    command = f"poet-build-engine {onnx_path} --fp32 --max-batch 2 -o {engine}"
    assert lines[-1] == (
        f"error: TensorRT is needed for the engine and is not installed here; {onnx_path} is ready and passes the "
        f"TensorRT graph check: on the target device run {command}"
    )

    # That command, run where TensorRT is missing too, builds from the ONNX as it is: nothing new is written.
    before = sorted(path.name for path in onnx_path.parent.iterdir())
    assert build_main([*command.split()[1:], "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().endswith(command)
    assert sorted(path.name for path in onnx_path.parent.iterdir()) == before


def test_build_engine_cli_refuses_an_onnx_of_another_reduced_precision(tmp_path, capsys):
    fp16 = make_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    assert build_main([str(fp16), "--int8", "-o", str(tmp_path / "model.engine")]) == 2
    assert "model.fp16.onnx is a fp16 model; give the FP32 ONNX or the checkpoint" in capsys.readouterr().err


def test_read_onnx_info_refuses_an_onnx_of_another_model(tmp_path):
    path = make_onnx(tmp_path / "model.onnx")
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"model\.onnx is not a poet-edge model"):
        read_onnx_info(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match=r"junk\.onnx is not a readable ONNX file"):
        read_onnx_info(tmp_path / "junk.onnx")


# --- sidecar and compatibility ----------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.engine"
    info = engine_info()
    assert write_sidecar(engine, info) == tmp_path / "model.engine.json"
    assert read_sidecar(engine) == info


def test_missing_or_broken_sidecar_is_a_clear_error(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(EngineCompatibilityError, match=r"model\.engine has no sidecar model\.engine\.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format_version": 1, "preprocess": {"input_size": [64, 64]}}))
    with pytest.raises(EngineCompatibilityError, match=r"sidecar .*model\.engine\.json .* not valid: .*num_queries"):
        read_sidecar(engine)


def test_check_compatibility_accepts_the_same_tensorrt_and_gpu(tmp_path):
    check_compatibility(engine_info(), tmp_path / "model.engine", EngineTarget("10.3.0", "Orin", "8.7"))


def test_check_compatibility_refuses_another_tensorrt_version(tmp_path):
    engine = tmp_path / "model.engine"
    with pytest.raises(EngineCompatibilityError) as error:
        check_compatibility(engine_info(), engine, EngineTarget("10.13.0.35", "Orin", "8.7"))
    message = str(error.value)
    assert f"engine {engine} cannot run here" in message
    assert "built for TensorRT 10.3.0 but this machine has 10.13.0.35" in message
    assert message.endswith(f"poet-build-engine model.int8-tensorrt.onnx --int8 --max-batch 4 -o {engine}")


def test_check_compatibility_refuses_another_compute_capability(tmp_path):
    with pytest.raises(EngineCompatibilityError) as error:
        check_compatibility(engine_info(), tmp_path / "model.engine", EngineTarget("10.3.0", "NVIDIA H100", "9.0"))
    assert "compute capability 8.7 (Orin) but this GPU, NVIDIA H100, is 9.0" in str(error.value)


def test_same_compute_capability_on_another_gpu_model_only_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        check_compatibility(engine_info(gpu="A10"), tmp_path / "model.engine", EngineTarget("10.3.0", "A40", "8.7"))
    assert "built on A10 and runs on A40" in caplog.text


def test_sidecar_without_build_target_is_refused(tmp_path):
    info = engine_info().replace(extra={"onnx": {"path": "m.onnx"}})
    with pytest.raises(EngineCompatibilityError, match="does not say which TensorRT version and GPU"):
        check_compatibility(info, tmp_path / "m.engine", EngineTarget("10.3.0", "Orin", "8.7"))


def test_dla_releases_are_a_positive_list():
    assert [has_dla(v) for v in ("10.0.1", "10.3.0.30", "10.7.0.23", "11.4.1.5")] == [True] * 4
    assert [has_dla(v) for v in ("10.8.0", "10.13.0.35", "11.0.0", "11.3.0", "11.4.0", "11.5.0")] == [False] * 6


def test_rebuild_command_keeps_the_dla_core(tmp_path):
    info = engine_info().replace(batch=1, max_batch=1)
    info = info.replace(extra={**info.extra, "tensorrt": {**info.extra["tensorrt"], "build_options": {"dla_core": 1}}})
    engine = tmp_path / "m.engine"
    assert (
        rebuild_command(info, engine) == f"poet-build-engine model.int8-tensorrt.onnx --int8 -o {engine} --dla-core 1"
    )
    assert rebuild_command(info, engine, keep_dla=False).endswith(f"--int8 -o {engine}")


def test_l4t_release_is_read_from_a_jetsons_release_file(tmp_path):
    line = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025"
    assert l4t_release(line) == "R36.4.3"
    (tmp_path / "nv_tegra_release").write_text(line + "\n")
    assert host_platform(tmp_path / "nv_tegra_release").l4t_release == "R36.4.3"
    assert host_platform(tmp_path / "absent").l4t_release is None


def test_check_compatibility_refuses_another_platform_of_the_same_gpu_generation(tmp_path):
    """A GH200 (aarch64, 9.0) engine on an x86 H100 (9.0): "serialized engines are not portable across platforms"."""
    gh200 = HostPlatform("aarch64", "Linux")
    info = engine_info(gpu="NVIDIA GH200 480GB", capability="9.0")
    info = info.replace(extra={**info.extra, "tensorrt": {**info.extra["tensorrt"], "platform": gh200.to_dict()}})
    h100 = EngineTarget("10.3.0", "NVIDIA H100", "9.0", HostPlatform("x86_64", "Linux"))
    with pytest.raises(EngineCompatibilityError, match="built for Linux aarch64 but this machine is Linux x86_64"):
        check_compatibility(info, tmp_path / "m.engine", h100)
    orin = HostPlatform("aarch64", "Linux", "R36.4.3")
    with pytest.raises(EngineCompatibilityError, match="Linux aarch64 but this machine is Linux aarch64, Jetson L4T"):
        check_compatibility(info, tmp_path / "m.engine", EngineTarget("10.3.0", "Orin", "9.0", orin))
    check_compatibility(info, tmp_path / "m.engine", EngineTarget("10.3.0", "NVIDIA GH200 480GB", "9.0", gh200))


# --- batch profile and precision accounting ---------------------------------------------------------------------


def dynamic_info(max_batch: int = 8, batch: int | None = None) -> ModelInfo:
    return ModelInfo(preprocess=PreprocessConfig(), num_queries=2, batch=batch, max_batch=max_batch)


def test_batch_profile_from_model_info():
    assert batch_profile(dynamic_info(8)) == (1, 8, 8)
    assert batch_profile(dynamic_info(8), min_batch=2, opt_batch=4) == (2, 4, 8)
    assert batch_profile(dynamic_info(8), max_batch=4) == (1, 4, 4)
    assert batch_profile(dynamic_info(batch=2, max_batch=2)) is None
    with pytest.raises(EngineBuildError, match="1 <= min <= opt <= max"):
        batch_profile(dynamic_info(8), min_batch=4, opt_batch=2)
    with pytest.raises(EngineBuildError, match="fixed batch of 2; export it with a dynamic batch"):
        batch_profile(dynamic_info(batch=2, max_batch=2), max_batch=4)


def test_profile_shapes_fill_in_the_batch_of_every_input():
    shapes = profile_shapes({"images": (-1, 3, 512, 384), "mask": (-1, 512, 384)}, (1, 4, 8))
    assert shapes == {
        "images": [(1, 3, 512, 384), (4, 3, 512, 384), (8, 3, 512, 384)],
        "mask": [(1, 512, 384), (4, 512, 384), (8, 512, 384)],
    }
    with pytest.raises(EngineBuildError, match="input 'images' has shape"):
        profile_shapes({"images": (-1, 3, -1, -1)}, (1, 1, 1))


def inspector_json(*types_: str, key: str = "Format/Datatype") -> str:
    layers = [
        {"Name": f"layer{i}", "Inputs": [{"Name": "t", key: kind}], "Outputs": []} for i, kind in enumerate(types_)
    ]
    return json.dumps({"Layers": layers})


def test_layer_precisions_read_tensorrt_10_and_11_inspector_json():
    v10 = inspector_json("Row major linear FP32", "Channel major FP16 format where channel % 8 == 0", "Int8 NC/32HW32")
    assert layer_precisions(v10) == {"fp16": 1, "fp32": 1, "int8": 1}
    v11 = inspector_json("Half", "Half", "Float", "Int32", key="DataType")
    assert layer_precisions(v11) == {"fp16": 2, "fp32": 1, "other": 1}
    split = {"Layers": [{"Inputs": [{"Format": "Channel major INT8 format (kHWC4)", "DataType": "Int8"}]}, "name"]}
    assert layer_precisions(json.dumps(split)) == {"int8": 1, "other": 1}


def test_precision_shortfall_flags_a_silent_fp32_build():
    assert precision_shortfall("int8", {"int8": 40, "fp32": 10}) is None
    assert precision_shortfall("fp32", {"fp32": 10}) is None
    warning = precision_shortfall("fp16", {"fp32": 50})
    assert warning is not None and "NO fp16 layers" in warning
    unknown = precision_shortfall("int8", {"other": 12})
    assert unknown is not None and "reported no layer types" in unknown and "NO int8" not in unknown


# --- build_engine against a recording stand-in for tensorrt ------------------------------------------------------


class FakeTensorRT(types.ModuleType):
    """The part of the tensorrt module build_engine uses; records what it was asked to do."""

    class NetworkDefinitionCreationFlag(IntEnum):
        STRONGLY_TYPED = 1

    class MemoryPoolType(IntEnum):
        WORKSPACE = 0

    class ProfilingVerbosity(IntEnum):
        DETAILED = 2

    class DeviceType(IntEnum):
        GPU = 0
        DLA = 1

    class BuilderFlag(IntEnum):
        GPU_FALLBACK = 3

    class LayerInformationFormat(IntEnum):
        JSON = 1

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class ILogger:
        def __init__(self) -> None:
            pass

    def __init__(
        self,
        layers_json: str,
        *,
        parse_errors: tuple[str, ...] = (),
        build_fails: bool = False,
        build_log: tuple[str, ...] = (),
        dla_capable: int = 0,
        load_fails: bool = False,
    ) -> None:
        super().__init__("tensorrt")
        self.__file__ = "fake/tensorrt/__init__.py"
        self.__version__ = "10.3.0"
        fake = self
        self.dla_cores_at_load: list[int] = []
        self.network_flags: list[int] = []
        self.configs: list = []
        self.profiles: list = []
        self.alive: set[str] = set()  # builder and network objects not yet freed
        self.alive_at_inspection: set[str] | None = None

        def track(obj, name: str) -> None:
            fake.alive.add(name)
            weakref.finalize(obj, fake.alive.discard, name)

        class Dims(tuple):
            pass

        class Network:
            def __init__(self, flags: int) -> None:
                self.flags, self.inputs = flags, []
                fake.network_flags.append(flags)
                track(self, "network")

            num_layers = 4

            def get_layer(self, index: int) -> int:
                return index

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, index: int):
                return self.inputs[index]

        class OnnxParser:
            def __init__(self, network: Network, logger) -> None:
                self.network = network
                self.errors = []
                for index, text in enumerate(parse_errors):
                    error = types.SimpleNamespace(node=lambda i=index: i, node_name=lambda i=index: f"/n{i}")
                    error.node_operator, error.desc = (lambda: "Foo"), (lambda text=text: text)
                    self.errors.append(error)

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int):
                return self.errors[index]

            def parse_from_file(self, path: str) -> bool:
                for value in onnx.load(path).graph.input:
                    shape = tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)
                    self.network.inputs.append(types.SimpleNamespace(name=value.name, shape=shape))
                return not self.errors

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return b"cache+" + self.data

        class Config:
            def __init__(self) -> None:
                self.flags, self.pools, self.profiles, self.caches = set(), {}, [], []
                self.default_device_type = fake.DeviceType.GPU
                fake.configs.append(self)

            def set_memory_pool_limit(self, pool, size: int) -> None:
                self.pools[pool] = size

            def add_optimization_profile(self, profile) -> int:
                self.profiles.append(profile)
                return 0

            def create_timing_cache(self, data: bytes) -> Cache:
                return Cache(bytes(data))

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                self.caches.append(cache)
                return cache.data != b"other-gpu"

            def get_timing_cache(self) -> Cache:
                return self.caches[-1]

            def set_flag(self, flag) -> None:
                self.flags.add(flag)

            def can_run_on_DLA(self, layer: int) -> bool:
                return layer < dla_capable

        class Profile:
            def __init__(self) -> None:
                self.shapes = {}
                fake.profiles.append(self)

            def set_shape(self, name: str, low, opt, high) -> None:
                self.shapes[name] = (low, opt, high)

        class Builder:
            num_DLA_cores = 2

            def __init__(self, logger) -> None:
                self.logger = logger
                track(self, "builder")

            def create_network(self, flags: int) -> Network:
                return Network(flags)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network, config) -> bytes | None:
                for line in build_log:
                    self.logger.log(3, line)
                if build_fails:
                    self.logger.log(1, "[builderUtils.cpp::build] Error Code 2: Internal Error (out of memory)")
                    return None
                return b"serialized engine"

        class Runtime:
            DLA_core = -1  # TensorRT's default: the engine lands on core 0

            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                fake.dla_cores_at_load.append(self.DLA_core)
                fake.alive_at_inspection = set(fake.alive)
                if load_fails:
                    return None
                inspector = types.SimpleNamespace(get_engine_information=lambda fmt: layers_json)
                return types.SimpleNamespace(create_engine_inspector=lambda: inspector)

        self.Dims, self.OnnxParser, self.Builder, self.Runtime = Dims, OnnxParser, Builder, Runtime


@pytest.fixture
def fake_trt(monkeypatch):
    monkeypatch.setattr(tensorrt_log, "_logger", None)  # one process-wide logger per stand-in module

    def install(layers_json: str = inspector_json("Half", "Half", "Float", key="DataType"), **kwargs) -> FakeTensorRT:
        module = FakeTensorRT(layers_json, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        gpu = types.SimpleNamespace(info=DeviceInfo("Orin", "8.7"), close=lambda: None, current=contextlib.nullcontext)
        monkeypatch.setattr(engine_module, "open_stream", lambda device: gpu)
        return module

    return install


def test_build_engine_strongly_typed_with_dynamic_batch_profile(fake_trt, tmp_path):
    trt = fake_trt()
    onnx_path = make_onnx(tmp_path / "model.fp16.onnx", precision="fp16", max_batch=8)
    engine = tmp_path / "model.engine"
    result = build_engine(onnx_path, engine, max_batch=4, workspace_gib=1.5, progress=False)

    assert trt.network_flags == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    config = trt.configs[0]
    assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    assert config.pools == {trt.MemoryPoolType.WORKSPACE: int(1.5 * 2**30)}
    assert trt.profiles[0].shapes == {
        "images": ((1, 3, 64, 64), (4, 3, 64, 64), (4, 3, 64, 64)),
        "mask": ((1, 64, 64), (4, 64, 64), (4, 64, 64)),
    }
    assert config.default_device_type == trt.DeviceType.GPU and not config.flags

    assert engine.read_bytes() == b"serialized engine"
    sidecar = read_sidecar(engine)
    assert sidecar == result.info
    assert (sidecar.batch, sidecar.max_batch, sidecar.precision) == (None, 4, "fp16")
    assert sidecar.extra["calibration"] == {"images": 8} and sidecar.extra["source"]["checkpoint"] == "tiny.pth"
    assert sidecar.extra["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    built = sidecar.extra["tensorrt"]
    assert (built["version"], built["gpu_name"], built["compute_capability"]) == ("10.3.0", "Orin", "8.7")
    assert built["layer_precisions"] == {"fp16": 2, "fp32": 1} and built["precision_warning"] is None
    check_compatibility(sidecar, engine, EngineTarget("10.3.0", "Orin", "8.7"))


def test_build_engine_records_the_platform_and_frees_the_builder_before_inspecting(fake_trt, tmp_path):
    trt = fake_trt()
    build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=False)
    assert trt.alive_at_inspection == set()  # builder and network freed: one engine copy on an 8 GB Orin Nano
    assert read_sidecar(tmp_path / "m.engine").extra["tensorrt"]["platform"] == host_platform().to_dict()


def test_an_engine_that_cannot_be_loaded_back_for_inspection_is_one_error(fake_trt, tmp_path):
    fake_trt(load_fails=True)
    with pytest.raises(EngineBuildError, match=r"built an engine from .*m\.onnx but could not load it back"):
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=False)
    assert not (tmp_path / "m.engine").exists()


def test_build_engine_fixed_batch_needs_no_profile(fake_trt, tmp_path):
    trt = fake_trt()
    build_engine(make_onnx(tmp_path / "m.onnx", batch=2), tmp_path / "m.engine", progress=False)
    assert trt.profiles == [] and trt.configs[0].profiles == []
    assert read_sidecar(tmp_path / "m.engine").batch == 2


def test_dla_build_with_no_layer_on_dla_warns_and_records_it(fake_trt, tmp_path, caplog):
    """TensorRT's fallback to the GPU is silent: an inspector and build log without a DLA layer is said loudly."""
    fake_trt(
        inspector_json("Int8 NC/32HW32", "Row major linear FP32"),
        build_log=("[GpuLayer] CONVOLUTION: /backbone/conv1/Conv", "[GpuLayer] MYELIN: {ForeignNode[/encoder...]}"),
        dla_capable=3,
    )
    with caplog.at_level(logging.WARNING):
        result = build_engine(
            make_onnx(tmp_path / "m.onnx", precision="int8", batch=1), tmp_path / "m.engine", dla_core=0, progress=False
        )
    assert "NO layer runs on DLA core 0: TensorRT placed all 2 engine layers on the GPU" in caplog.text
    recorded = read_sidecar(tmp_path / "m.engine").extra["tensorrt"]["dla"]
    assert recorded == {
        "core": 0,
        "dla_layers": 0,
        "gpu_layers": 2,
        "network_layers_dla_capable": 3,
        "network_layers": 4,
        "warning": result.dla.shortfall(),
    }
    assert recorded["warning"].startswith("NO layer runs on DLA core 0")


def test_dla_layers_are_counted_from_the_build_log_and_inspector(fake_trt, tmp_path, caplog):
    layers = {
        "Layers": [
            {"Name": "images to nvm", "LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Int8"}]},
            {"Name": "{ForeignNode[/backbone/conv1/Conv.../backbone/layer4/relu]}", "LayerType": "ForeignNode"},
            {"Name": "{ForeignNode[/encoder/...]}", "LayerType": "Myelin", "Inputs": [{"Format/Datatype": "Half"}]},
        ]
    }
    fake_trt(
        json.dumps(layers),
        build_log=(
            "---------- Layers Running on DLA ----------",
            "[DlaLayer] {ForeignNode[/backbone/conv1/Conv.../backbone/layer4/relu]}",
            "---------- Layers Running on GPU ----------",
            "[GpuLayer] MYELIN: {ForeignNode[/encoder/...]}",
        ),
        dla_capable=1,
    )
    with caplog.at_level(logging.WARNING):
        result = build_engine(
            make_onnx(tmp_path / "m.onnx", precision="int8", batch=1), tmp_path / "m.engine", dla_core=1, progress=False
        )
    assert result.dla is not None and (result.dla.dla_layers, result.dla.gpu_layers) == (1, 2)
    assert "only 1 of 4 network layers can run on DLA core 1" in caplog.text


def test_build_engine_on_dla_with_gpu_fallback(fake_trt, tmp_path):
    trt = fake_trt(inspector_json("Int8 NC/32HW32", "Row major linear FP32"), dla_capable=4)
    onnx_path = make_onnx(tmp_path / "m.onnx", precision="int8", batch=1)
    build_engine(onnx_path, tmp_path / "m.engine", dla_core=1, progress=False)
    config = trt.configs[0]
    assert config.default_device_type == trt.DeviceType.DLA and config.DLA_core == 1
    assert config.flags == {trt.BuilderFlag.GPU_FALLBACK}
    assert trt.dla_cores_at_load == [1]  # the inspector's engine is loaded onto the core it was built for
    assert read_sidecar(tmp_path / "m.engine").extra["tensorrt"]["build_options"]["dla_core"] == 1
    with pytest.raises(EngineBuildError, match="DLA core 2 does not exist: this device has 2 DLA cores"):
        build_engine(tmp_path / "m.onnx", tmp_path / "other.engine", dla_core=2, progress=False)
    assert not (tmp_path / "other.engine").exists()


def test_timing_cache_is_reused_and_written_back_atomically(fake_trt, tmp_path):
    trt = fake_trt()
    cache = tmp_path / "timing.cache"
    onnx_path = make_onnx(tmp_path / "m.onnx")
    build_engine(onnx_path, tmp_path / "a.engine", timing_cache=cache, progress=False)
    assert cache.read_bytes() == b"cache+"
    build_engine(onnx_path, tmp_path / "b.engine", timing_cache=cache, progress=False)
    assert trt.configs[1].caches[0].data == b"cache+" and cache.read_bytes() == b"cache+cache+"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_timing_cache_from_another_gpu_is_replaced(fake_trt, tmp_path, caplog):
    trt = fake_trt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"other-gpu")
    with caplog.at_level(logging.WARNING):
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", timing_cache=cache, progress=False)
    assert "is from another TensorRT version or GPU" in caplog.text
    assert [c.data for c in trt.configs[0].caches] == [b"other-gpu", b""] and cache.read_bytes() == b"cache+"


def test_every_parser_error_is_reported_and_nothing_written(fake_trt, tmp_path):
    fake_trt(parse_errors=("unsupported op Foo", "bad attribute"))
    with pytest.raises(EngineBuildError) as error:
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=False)
    message = str(error.value)
    assert "m.onnx (2 errors)" in message
    assert "node 0 '/n0' (Foo): unsupported op Foo" in message and "node 1 '/n1' (Foo): bad attribute" in message
    assert not (tmp_path / "m.engine").exists() and not sidecar_path(tmp_path / "m.engine").exists()


def test_failed_build_leaves_no_engine_and_quotes_tensorrt(fake_trt, tmp_path):
    fake_trt(build_fails=True)
    with pytest.raises(EngineBuildError, match=r"could not build an engine from .*TensorRT said: .*out of memory"):
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.onnx"]


def test_int8_onnx_that_built_without_int8_layers_is_reported(fake_trt, tmp_path, caplog):
    fake_trt(inspector_json("Row major linear FP32", "Float", key="Format/Datatype"))
    with caplog.at_level(logging.WARNING):
        result = build_engine(make_onnx(tmp_path / "m.onnx", precision="int8"), tmp_path / "m.engine", progress=False)
    assert "NO int8 layers" in caplog.text
    assert "NO int8 layers" in result.info.extra["tensorrt"]["precision_warning"]


def test_progress_monitor_follows_nested_build_phases(fake_trt, tmp_path):
    trt = fake_trt()
    build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=True)
    monitor = trt.configs[0].progress_monitor
    assert isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Timing layers", "Building engine", 10)
    assert monitor.step_complete("Timing layers", 4) and monitor.step_complete("Building engine", 0)
    assert [(bar.desc, bar.n, bar.total) for bar in monitor._bars.values()] == [
        ("Building engine", 1, 3),
        ("Timing layers", 5, 10),
    ]
    monitor.phase_finish("Timing layers")
    monitor.phase_finish("Building engine")
    assert monitor._bars == {}


def test_unwritable_engine_folder_fails_before_building(fake_trt, tmp_path):
    trt = fake_trt()
    (tmp_path / "taken").write_text("a file where the output folder should be")
    with pytest.raises(OutputError, match=r"cannot write .*taken/m\.engine"):
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "taken" / "m.engine", progress=False)
    assert trt.network_flags == []


def test_dla_needs_fixed_shapes_and_a_tensorrt_with_dla(fake_trt, tmp_path):
    trt = fake_trt()
    dynamic = make_onnx(tmp_path / "dynamic.onnx", precision="int8", max_batch=4)
    with pytest.raises(EngineBuildError, match=r"DLA needs fixed shapes, and this ONNX has a dynamic batch \(1\.\.4\)"):
        build_engine(dynamic, tmp_path / "d.engine", dla_core=0, progress=False)
    trt.__version__ = "11.2.1"
    with pytest.raises(EngineBuildError, match=r"TensorRT 11\.2\.1 has no DLA support"):
        build_engine(make_onnx(tmp_path / "fixed.onnx", batch=1), tmp_path / "f.engine", dla_core=0, progress=False)
    assert trt.network_flags == [] and not list(tmp_path.glob("*.engine"))


def test_dla_refusals_come_before_any_export_in_the_cli(tmp_path, capsys, tiny_checkpoint):
    engine = tmp_path / "out" / "tiny.engine"
    argv = [str(tiny_checkpoint), "--int8", "--max-batch", "4", "--dla-core", "0", "-o", str(engine)]
    assert build_main([*argv, "--calib-images", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: DLA needs fixed shapes")
    assert not (tmp_path / "out").exists()


def test_old_tensorrt_is_one_line_before_any_other_work(monkeypatch, tmp_path, capsys, tiny_checkpoint):
    """TensorRT 8.6 has neither strongly typed networks nor IProgressMonitor: refused before the export starts."""
    old = types.ModuleType("tensorrt")
    old.__file__ = "site-packages/tensorrt/__init__.py"
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    engine = tmp_path / "out" / "tiny.engine"
    assert build_main([str(tiny_checkpoint), "--fp16", "-o", str(engine), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: TensorRT 8.6.1 is installed (site-packages/tensorrt/__init__.py) but poet-edge")
    assert "TensorRT 10.0 or newer" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(TensorRTVersionError, match="TensorRT 8.6.1 is installed"):
        build_engine(make_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", progress=False)


def test_a_graph_tensorrt_would_refuse_is_stopped_before_the_builder(fake_trt, tmp_path):
    trt = fake_trt()
    path = make_onnx(tmp_path / "m.onnx")
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Unique", ["images"], ["unique_out"], name="odd_one"))
    onnx.save(model, path)
    with pytest.raises(GraphCheckError, match=r"m\.onnx would not parse in TensorRT: .*node 'odd_one' \(Unique\)"):
        build_engine(path, tmp_path / "m.engine", progress=False)
    assert trt.network_flags == []


def test_max_batch_on_a_fixed_batch_onnx_is_refused_at_once(tmp_path, capsys):
    fixed = make_onnx(tmp_path / "fixed.onnx", batch=1)
    assert build_main([str(fixed), "--fp32", "--max-batch", "4", "-o", str(tmp_path / "m.engine")]) == 2
    assert "fixed.onnx has a fixed batch of 1; --max-batch needs an ONNX exported with a dynamic batch" in (
        capsys.readouterr().err
    )


def test_the_engine_never_replaces_its_onnx(tmp_path, capsys):
    onnx_path = make_onnx(tmp_path / "model.onnx")
    before = onnx_path.read_bytes()
    assert build_main([str(onnx_path), "--fp32", "-o", str(onnx_path)]) == 2
    assert "it is the input" in capsys.readouterr().err
    assert onnx_path.read_bytes() == before
