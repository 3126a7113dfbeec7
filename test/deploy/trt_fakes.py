"""A fake `tensorrt` module and a fake current CUDA device for the TensorRT tests on a CPU.
In: a pytest MonkeyPatch. Out: the installed fakes and what they recorded (builds, device calls).

The builder's parser reads the real exported ONNX graphs into fake layers (one per node, dtypes
from shape inference), so layer-precision rules run on the real graphs; an int8 build reads the
calibrator's cache or, without one, every batch (through the buffers behind the pointers, as
TensorRT would) and writes a calibration table. `FakeCudaDevice` stands in for
`torch.cuda.device`; every fake builder, runtime, engine and context call records the device
current at that moment in `DEVICE_CALLS`. Importable from test/deploy (pytest puts it on sys.path).
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import onnx
import pytest
import torch
from onnx import shape_inference
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy import trt_build
from flashocc_ros.deploy.engine_meta import Platform
from flashocc_ros.deploy.onnx_export import METADATA_FILE, ExportMetadata, GraphSpec, file_sha256

PLATFORM = Platform("10.13.0.35", "NVIDIA H200", "9.0")

#: (call, current CUDA device index or None) in call order, for every fake TensorRT call.
DEVICE_CALLS: list[tuple[str, int | None]] = []


class FakeCudaDevice:
    """`torch.cuda.device` without CUDA: makes the device's index current inside the block."""

    stack: ClassVar[list[int | None]] = []

    def __init__(self, device: torch.device | int) -> None:
        self.index = device if isinstance(device, int) else torch.device(device).index

    def __enter__(self) -> None:
        FakeCudaDevice.stack.append(self.index)

    def __exit__(self, *exc: object) -> None:
        FakeCudaDevice.stack.pop()


def record(call: str) -> None:
    DEVICE_CALLS.append((call, FakeCudaDevice.stack[-1] if FakeCudaDevice.stack else None))


def install_fake_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.cuda.device` becomes `FakeCudaDevice`; `DEVICE_CALLS` starts empty."""
    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    FakeCudaDevice.stack = []
    DEVICE_CALLS.clear()


def calibration_table(names: Iterable[str]) -> bytes:
    """A TensorRT calibration table (the text format TensorRT 10 writes) for tensors `names`."""
    lines = ["TRT-101300-EntropyCalibration2", *(f"{n}: 3c010a14" for n in names)]
    return ("\n".join(lines) + "\n").encode()


def write_export(onnx_dir: Path, cfg: ModelConfig, weights: str) -> ExportMetadata:
    """An export folder of `cfg` whose graph files (placeholder bytes, never parsed) match its
    metadata, as `verify_export` checks them."""
    from deploy_fakes import fake_export

    onnx_dir.mkdir(parents=True, exist_ok=True)
    export = fake_export(cfg, weights)
    specs = {}
    for key, spec in (("image_graph", export.image_graph), ("bev_graph", export.bev_graph)):
        path = onnx_dir / spec.file
        path.write_bytes(spec.file.encode())
        specs[key] = GraphSpec(spec.file, file_sha256(path), spec.inputs, spec.outputs)
    export = ExportMetadata(**{**export.__dict__, **specs})
    (onnx_dir / METADATA_FILE).write_text(export.to_json())
    return export


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _names(*names: str) -> type:
    return type("Enum", (), {n: _Named(n) for n in names})


DataType = _names("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8")
LayerType = _names("GRID_SAMPLE", "SOFTMAX")
BuilderFlag = _names("FP16", "BF16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS")
ONNX_TYPES = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL"}


class FakeTensor:
    def __init__(self, name: str, dtype: _Named) -> None:
        self.name, self.dtype = name, dtype


class FakeLayer:
    precision: _Named | None = None  # as ILayer.precision (weak typing, TensorRT 10.x)

    def __init__(self, node: onnx.NodeProto, tensors: dict[str, FakeTensor]) -> None:
        self.name, self.op = node.name, node.op_type
        special = {"GridSample": LayerType.GRID_SAMPLE, "Softmax": LayerType.SOFTMAX}
        self.type = special.get(node.op_type, _Named(node.op_type))  # type: ignore[attr-defined]
        self.inputs = [tensors.get(i) if i else None for i in node.input]
        self.outputs = [tensors[o] for o in node.output]
        self.precision = None
        self.output_types: dict[int, _Named] = {}

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, i: int) -> FakeTensor | None:
        return self.inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: _Named) -> None:
        self.output_types[i] = dtype


class FakeNetwork:
    def __init__(self) -> None:
        self.layers: list[FakeLayer] = []
        self.inputs: list[FakeTensor] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]


class FakeParser:
    """Builds a FakeNetwork from the ONNX bytes: one layer per node, dtypes from inference."""

    num_errors = 0

    def __init__(self, network: FakeNetwork, logger: object) -> None:
        self.network = network

    def parse(self, data: bytes, path: str) -> bool:
        record("parse")
        model = shape_inference.infer_shapes(onnx.load_from_string(data))
        g = model.graph
        types_ = {
            v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)
        }
        types_.update({t.name: t.data_type for t in g.initializer})
        for node in g.node:
            if node.op_type == "Constant":
                types_[node.output[0]] = node.attribute[0].t.data_type
        tensors = {
            name: FakeTensor(name, getattr(DataType, ONNX_TYPES.get(t, "FLOAT")))
            for name, t in types_.items()
        }
        self.network.inputs = [tensors[v.name] for v in g.input]
        self.network.layers = [FakeLayer(node, tensors) for node in g.node]
        return True


class FakeConfig:
    int8_calibrator: Any = None  # as IBuilderConfig.int8_calibrator (TensorRT 10.x)

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.int8_calibrator = None
        self.progress_monitor = None
        self.fed: list[dict[str, Tensor]] = []  # int8: the batches TensorRT read

    def set_flag(self, flag: _Named) -> None:
        self.flags.add(flag.name)

    def set_memory_pool_limit(self, pool: object, size: int) -> None:
        pass

    def create_timing_cache(self, data: bytes) -> types.SimpleNamespace:
        return types.SimpleNamespace(serialize=lambda: b"timing")

    def set_timing_cache(self, cache: object, ignore_mismatch: bool) -> bool:
        return True

    def get_timing_cache(self) -> types.SimpleNamespace:
        return self.create_timing_cache(b"")


class FakeBuilder:
    builds: ClassVar[list[tuple[FakeNetwork, FakeConfig]]] = []

    def __init__(self, logger: object) -> None:
        record("Builder")

    def create_network(self, flags: int = 0) -> FakeNetwork:
        record("create_network")
        return FakeNetwork()

    def create_builder_config(self) -> FakeConfig:
        record("create_builder_config")
        return FakeConfig()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes:
        """Records the build; int8 reads the calibration cache or, without one, every batch
        (the buffers behind the pointers, as TensorRT would) and writes a cache."""
        record("build_serialized_network")
        FakeBuilder.builds.append((network, config))
        cal = config.int8_calibrator
        if "INT8" in config.flags and cal.read_calibration_cache() is None:
            names = [t.name for t in network.inputs]
            while (ptrs := cal.get_batch(names)) is not None:
                buffers = {b.data_ptr(): b for b in cal.feeder.buffers.values()}
                config.fed.append(
                    {n: buffers[p].clone() for n, p in zip(names, ptrs, strict=True)}
                )
            cal.write_calibration_cache(memoryview(calibration_table(names)))
        pinned = [layer.name for layer in network.layers if layer.precision is not None]
        return json.dumps({"flags": sorted(config.flags), "pinned": pinned}).encode()


class _FakeBase:
    def __init__(self) -> None:
        pass


def install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A `tensorrt` 10.13 module whose builder parses the real ONNX graphs into fake layers and
    records each build; this machine's platform is PLATFORM; `torch.cuda.device` is faked."""
    mod = types.ModuleType("tensorrt")
    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=2: None})
    members = {
        "__version__": PLATFORM.tensorrt_version,
        "Builder": FakeBuilder,
        "OnnxParser": FakeParser,
        "Logger": logger,
        "DataType": DataType,
        "LayerType": LayerType,
        "BuilderFlag": BuilderFlag,
        "ILayer": FakeLayer,
        "IBuilderConfig": FakeConfig,
        "MemoryPoolType": _names("WORKSPACE"),
        "IProgressMonitor": type("IProgressMonitor", (_FakeBase,), {}),
        "IInt8EntropyCalibrator2": type("IInt8EntropyCalibrator2", (_FakeBase,), {}),
        "Runtime": FakeRuntime,
        "TensorIOMode": types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
    }
    for name, value in members.items():
        setattr(mod, name, value)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(trt_build, "cuda_platform", lambda version, device="cuda": PLATFORM)
    install_fake_cuda_device(monkeypatch)
    FakeBuilder.builds = []
    return mod


# --- the runtime side: deserialised engines with bindings, contexts ----------------------------


class FakeContext:
    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        record("set_tensor_address")
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        record("execute_async_v3")
        self.executions += 1
        return True


class FakeEngine:
    """A deserialised engine whose bindings are `io` (name -> (shape, is_input)), float32."""

    def __init__(self, io: dict[str, tuple[list[int], bool]]) -> None:
        self.io = io
        self.context = FakeContext()
        self.num_io_tensors = len(io)

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_dtype(self, name: str) -> _Named:
        return DataType.FLOAT  # type: ignore[attr-defined,no-any-return]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.io[name][0])

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if self.io[name][1] else "OUTPUT"

    def create_execution_context(self) -> FakeContext:
        record("create_execution_context")
        return self.context


class FakeRuntime:
    """`trt.Runtime`: deserialises every engine file to the FakeEngine `ENGINES` names for it."""

    ENGINES: ClassVar[dict[str, FakeEngine]] = {}  # engine file name -> engine

    def __init__(self, logger: object) -> None:
        record("Runtime")
        self.engine_host_code_allowed = True  # the backend must switch it off

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        record("deserialize_cuda_engine")
        return FakeRuntime.ENGINES.get(data.decode())


def write_fake_engine(path: Path, io: dict[str, tuple[list[int], bool]]) -> None:
    """An engine file FakeRuntime deserialises to a FakeEngine with bindings `io`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(path.name)
    FakeRuntime.ENGINES[path.name] = FakeEngine(io)
