"""The marks of every test that needs CUDA and the TensorRT runtime (skipped, with the reason
printed, where either is missing). In: nothing. Out: TRT_MISSING, TRT_MARKS.
Importable from every test folder (test/ is on sys.path through test/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from flashocc_ros.deploy.trt_build import tensorrt_missing_reason


def _missing() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    return tensorrt_missing_reason()


#: Why TensorRT tests cannot run here (None: they can).
TRT_MISSING = _missing()
#: `pytestmark` of a TensorRT test module.
TRT_MARKS = [
    pytest.mark.gpu,
    pytest.mark.tensorrt,
    pytest.mark.skipif(TRT_MISSING is not None, reason=f"TensorRT test: {TRT_MISSING}"),
]
