"""bf16 on a CPU without fast bfloat16: both PyTorch backends (plain and fast path) still run
and warn once, naming the fix; with fast bf16 they do not warn. In: the `tiny` config, oneDNN's
answer patched both ways. Out: assertions on the log.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import pytest
import torch

from flashocc_ros import cpu
from flashocc_ros.config import model_config
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.runtime.backend import TorchBackend
from flashocc_ros.runtime.cuda_fast import CudaFastBackend


def test_native_bf16_matches_the_cpu_flags() -> None:
    """oneDNN's fast bf16 needs AVX-512 (F, BW, VL, DQ) on x86: cross-check with /proc/cpuinfo."""
    info = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not info.exists():
        pytest.skip("the cross-check reads x86 flags from /proc/cpuinfo")
    flags = next(ln for ln in info.read_text().splitlines() if ln.startswith("flags")).split()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags)
    assert cpu.native_bf16() == avx512


@pytest.mark.parametrize("backend", [TorchBackend, CudaFastBackend])
@pytest.mark.parametrize("fast", [True, False])
def test_cpu_bf16_backend_warns_only_when_emulated(
    backend: type[TorchBackend] | type[CudaFastBackend],
    fast: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: fast)
    cfg = model_config("tiny")
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="flashocc_ros.cpu"):
        backend(build_model(cfg), cfg, device="cpu", precision="bf16")
        backend(build_model(cfg), cfg, device="cpu", precision="fp32")
    warnings = [r.getMessage() for r in caplog.records if r.name == "flashocc_ros.cpu"]
    if fast:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert "precision bf16" in warnings[0] and "use fp32" in warnings[0]
