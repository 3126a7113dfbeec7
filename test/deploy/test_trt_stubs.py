"""mypy checks the TensorRT code against typings/tensorrt (TensorRT 10.x API), not `Any`.
In: two snippets type-checked with the project's mypy settings. Out: pass/fail (~5 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
import tensorrt as trt
logger = trt.Logger(trt.Logger.WARNING)
config = trt.Builder(logger).create_builder_config()
config.set_flag(trt.BuilderFlag.FP16)
config.set_flag(trt.BuilderFlag.INT8)
reveal_type(config)
reveal_type(trt.Runtime(logger).deserialize_cuda_engine(b""))
layer = trt.Builder(logger).create_network(0).get_layer(0)
if layer.type == trt.LayerType.GRID_SAMPLE:
    layer.precision = trt.DataType.FLOAT
    layer.set_output_type(0, trt.DataType.FLOAT)
config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
reveal_type(layer.get_input(0))
"""
BAD = """
import tensorrt as trt
trt.BuilderFlag.FP17
ctx: trt.IExecutionContext
ctx.execute_async_v3("stream")
lay: trt.ILayer
lay.precision = "fp32"
"""


def _mypy(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_tensorrt_calls_are_type_checked() -> None:
    good = _mypy(GOOD)
    assert good.returncode == 0, good.stdout
    assert 'Revealed type is "tensorrt.IBuilderConfig"' in good.stdout
    assert 'Revealed type is "tensorrt.ICudaEngine | None"' in good.stdout
    assert 'Revealed type is "tensorrt.ITensor | None"' in good.stdout
    bad = _mypy(BAD)
    assert bad.returncode == 1, bad.stdout
    assert '"type[BuilderFlag]" has no attribute "FP17"' in bad.stdout
    assert 'incompatible type "str"; expected "int"' in bad.stdout
    assert 'has type "DataType"' in bad.stdout  # layer precision takes a DataType
