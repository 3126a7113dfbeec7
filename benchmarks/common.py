"""Shared pieces of the benchmark suite: rows, interleaved median timing, tensor peak memory.
In: callables to time / a forward pass to watch. Out: `Row`s (one per claim) and machine facts.

Every row compares "ours" with a baseline measured in the same process, interleaved call by
call (ours, baseline, ours, ...) so that background load hits both alike; the claim is the
ratio of the medians, absolute milliseconds are printed for reference only.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: How a row's ratio reads: "ours/baseline" (lower is better), "speedup" = baseline/ours
#: (higher is better), "fraction" = ours/baseline as a share of the baseline (lower is better).
RATIO_KINDS = ("ours/baseline", "speedup", "fraction")


@dataclass
class Row:
    """One line of the results table. `ratio` is None only when `skipped` says why."""

    group: str  # "1 c2h-vs-3d", "2 bev-pool", ...
    name: str  # what "ours" is
    baseline: str  # what it is compared with
    ours_ms: float | None = None
    baseline_ms: float | None = None
    ratio: float | None = None
    ratio_kind: str = "ours/baseline"
    target: str = ""  # e.g. "<= 0.45", ">= 40"
    met: bool | None = None
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio_kind not in RATIO_KINDS:
            raise ValueError(f"ratio_kind must be one of {RATIO_KINDS}, got {self.ratio_kind!r}")
        if self.ratio is not None and self.target and self.met is None:
            op, value = self.target.split()
            self.met = self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped_row(group: str, name: str, baseline: str, reason: str, target: str = "") -> Row:
    """A row that could not be measured here, with the reason."""
    return Row(group, name, baseline, target=target, skipped=reason)


def compare(
    fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall-clock ms of each callable, called round-robin `repeats` times after
    `warmup` untimed rounds."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                samples[key].append(dt)
    return {k: statistics.median(v) for k, v in samples.items()}


def median_stages(
    run: Callable[[], dict[str, float]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median of each stage over `repeats` calls of `run` (which returns stage -> ms)."""
    samples: dict[str, list[float]] = {}
    for i in range(warmup + repeats):
        stages = run()
        if i >= warmup:
            for k, v in stages.items():
                samples.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in samples.items()}


class TensorPeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the `with` block and alive at once.

    Every aten op output is recorded by storage (views share one); a storage counts until the
    last tensor object referring to it is freed. Storages that existed before (weights,
    inputs) are not counted. This is the CPU analogue of `torch.cuda.max_memory_allocated`
    minus the allocator's caching and kernel workspaces: the activation memory a pass needs.
    """

    def __init__(self, existing: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        self._external = {t.untyped_storage().data_ptr() for t in existing or []}
        self._live: dict[int, list[int]] = {}  # storage ptr -> [bytes, tensor objects alive]
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._external or storage.nbytes() == 0:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]


def peak_tensor_mib(fn: Callable[[], object], existing: list[torch.Tensor]) -> float:
    """Peak MiB of tensors allocated by `fn()` and alive at the same time (see
    `TensorPeakMemory`); the result of `fn` is dropped inside the measurement."""
    with TensorPeakMemory(existing) as mem:
        fn()
    return mem.peak / 2**20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_running() -> bool:
    """True while a `flashocc_ros.tools.train` process runs on this machine (background load)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"flashocc_ros.tools.train" in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads, library versions, GPU (if any) and the current load."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1min": os.getloadavg()[0],
        "training_running": training_running(),
    }
    for lib in ("numpy", "onnxruntime", "cv2"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            info[lib] = None
    return info


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
