"""Whether this CPU runs bfloat16 fast, for a warning where bf16 autocast is asked for on a CPU.
In: nothing (asks oneDNN through PyTorch). Out: `native_bf16()`, `warn_if_slow_bf16()`.

oneDNN runs bf16 convolutions and matmuls with AVX-512 (AVX512-BF16, AMX) instructions; on a CPU
with AVX2 only, bf16 autocast still gives the right answer but is emulated. Measured on a 2-core
AMD EPYC with AVX2 only: a demo-model training step took about 35 s with `--bf16` and 3.07 s in
float32 (on a 2-core Zen 4 with AVX512-BF16 the demo network's forward pass was 2.4x faster in
bf16 than in float32 instead).
"""

from __future__ import annotations

import logging

import torch

LOG = logging.getLogger(__name__)


def native_bf16() -> bool:
    """True when oneDNN has fast bfloat16 kernels for this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def warn_if_slow_bf16(what: str) -> None:
    """Log a warning naming `what` when bf16 would be emulated on this CPU."""
    if native_bf16():
        return
    LOG.warning(
        "%s: this CPU has no fast bfloat16 (no AVX-512 for oneDNN): bf16 is emulated here and "
        "several times slower than fp32; use fp32 on this machine",
        what,
    )


__all__ = ["native_bf16", "warn_if_slow_bf16"]
