"""One-command GPU self-check: every backend this machine can run, timed and compared.
In: --model-config, --weights, --frames, --out JSON. Out: a table on stdout and the JSON file.

`python -m flashocc_ros.tools.gpu_selfcheck [--model-config demo] [--frames 50]`
Runs, as far as installed: PyTorch CUDA fp32 (the reference, plain `TorchBackend`), the torch
fast path fp32/fp16, onnxruntime with the CUDA provider, TensorRT fp32/fp16/int8 (engines built
into --work-dir; int8 calibrates on --calib-bag, else on the check's own synthetic frames). Each
backend runs the whole pipeline (preprocessing of uint8 camera images, network, labels) on the
same synthetic bundles; reported per backend: network and pipeline median/p99 ms, peak GPU
memory (device-wide, above the level before the backend was created), max abs logit difference
and arg-max agreement against the reference, frame by frame. Backends that cannot run are
listed with why.

Temporal 4D-stereo configs (`--model-config tiny-stereo` / `flashocc-r50-4d-stereo`) get a
moving sequence instead: bundles 0.5 s apart, the ego driving 1.4 m and turning 0.05 rad per
bundle, each camera captured 2 cm further on, with every camera's ego pose (temporal backends
need `FramePoses`). Every backend runs the whole sequence from a scene start, so its history
sees the same frames; the reference is PyTorch fp32 (`TorchBackend`), then PyTorch fp16
autocast, onnxruntime, TensorRT fp32/fp16/int8 (int8 calibrates on the recorded inputs of
consecutive frames: of --calib-bag, else of the check's own sequence, with a warning).

Exit codes: 0 checked, 1 some backend failed, 2 usage error, 3 no CUDA device (nothing to check;
one line says so and the JSON records it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flashocc_ros.config import ConfigError, ModelConfig

LOG = logging.getLogger(__name__)

EXIT_NO_CUDA = 3


@dataclass
class Row:
    """One backend's results (times in ms, memory in MiB)."""

    backend: str
    precision: str
    status: str = "ok"  # ok | skipped: why | failed: why
    network_median: float = float("nan")
    network_p99: float = float("nan")
    pipeline_median: float = float("nan")
    pipeline_p99: float = float("nan")
    peak_mem_mib: float = float("nan")
    max_abs_diff: float = float("nan")
    agreement: float = float("nan")  # arg-max agreement with the reference, [0, 1]
    extra: dict[str, Any] = field(default_factory=dict)


def no_cuda_reason() -> str | None:
    """Why no GPU check can run (None when PyTorch sees a CUDA device)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none"
        return f"no CUDA device visible to PyTorch {torch.__version__} (built with CUDA {built})"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    return (
        float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")
    )


def table(rows: Sequence[Row]) -> str:
    head = (
        f"{'backend':<24}{'prec':<6}{'net med':>9}{'net p99':>9}{'pipe med':>10}"
        f"{'pipe p99':>10}{'mem MiB':>9}{'max|d|':>10}{'agree %':>9}  status"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.backend:<24}{r.precision:<6}{r.network_median:>9.2f}{r.network_p99:>9.2f}"
            f"{r.pipeline_median:>10.2f}{r.pipeline_p99:>10.2f}{r.peak_mem_mib:>9.0f}"
            f"{r.max_abs_diff:>10.2e}{100 * r.agreement:>9.3f}  {r.status}"
        )
    return "\n".join(lines)


#: Moving sequence of temporal configs (`compare_frames.drive_pose`): bundle spacing, speed,
#: turn rate, and the capture delay between the cameras of a bundle.
SEQUENCE_SPACING_NS = 500_000_000
SEQUENCE_SPEED_MPS = 2.8
SEQUENCE_YAW_RATE = 0.1
CAMERA_DT_S = 0.008


def synthetic_bundles(cfg: ModelConfig, count: int, seed: int = 0) -> list[list[Any]]:
    """`count` camera bundles (uint8 BGR images at the rig's resolution, rig calibration).

    Temporal configs: a moving sequence (SEQUENCE_* above) with every camera's ego pose."""
    from flashocc_ros.rig import nuscenes_like_rig
    from flashocc_ros.runtime.pipeline import CameraInput
    from flashocc_ros.tools.compare_frames import drive_pose

    rig = nuscenes_like_rig()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        cams = []
        for n, (name, cam, ext, k) in enumerate(
            zip(
                cfg.camera_names,
                rig.cameras,
                rig.camera_to_base(),
                rig.intrinsics(),
                strict=False,
            )
        ):
            img = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
            if cfg.temporal:
                t_s = i * SEQUENCE_SPACING_NS / 1e9 + n * CAMERA_DT_S
                pose = drive_pose(t_s, SEQUENCE_SPEED_MPS, SEQUENCE_YAW_RATE)
                stamp = 1_000_000_000 + i * SEQUENCE_SPACING_NS
                cams.append(CameraInput(name, img, k, ext, pose, stamp))
            else:
                cams.append(CameraInput(name, img, k, ext, None, 1_000_000_000 + i))
        out.append(cams)
    return out


class LogitsTap:
    """A Backend wrapper that keeps a CPU copy of every logits tensor it returns (temporal
    backends cannot be asked again for a frame: that would step their history twice). The
    copy's time is kept in `copy_ms`, so the caller can take it out of the network time."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.logits: list[torch.Tensor] = []
        self.copy_ms: list[float] = []

    def infer(self, images: Any, calib: Any, poses: Any = None) -> torch.Tensor:
        out: torch.Tensor = self.backend.infer(images, calib, poses)
        t0 = time.perf_counter()
        self.logits.append(out.float().cpu())
        self.copy_ms.append((time.perf_counter() - t0) * 1e3)
        return out

    def reset(self) -> None:
        self.backend.reset()

    def last_stage_timings_ms(self) -> dict[str, float]:
        timings: dict[str, float] = self.backend.last_stage_timings_ms()
        return timings


def _used_mib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def run_backend(
    row: Row, make: Callable[[], Any], cfg: ModelConfig, bundles: list[list[Any]], reference: Any
) -> Any:
    """Create the backend, run the pipeline on every bundle, fill `row`; returns the logits of
    each bundle (CPU) or None when it failed."""
    from flashocc_ros.runtime.factory import pipeline_preprocessor
    from flashocc_ros.runtime.pipeline import OccupancyPipeline

    torch.cuda.synchronize()
    base = _used_mib()
    peak = base
    try:
        backend = make()
        tap = LogitsTap(backend) if cfg.temporal else None
        pipeline = OccupancyPipeline(
            cfg, tap or backend, preprocess=pipeline_preprocessor(backend, "cuda")
        )
        net, pipe, logits = [], [], []
        for cams in bundles:
            result = pipeline.process(cams)
            tapped = tap.copy_ms[-1] if tap is not None else 0.0  # the tap's copy is not ours
            pipe.append(
                sum(
                    result.timings_ms.get(k, 0.0) for k in ("preprocess", "network", "postprocess")
                )
                - tapped
            )
            net.append(result.timings_ms["network"] - tapped)
            if tap is None:  # single-frame: the same bundle once more, outside the timing
                pre = pipeline.preprocess([c.image for c in cams], cfg.input_size)
                calib = pipeline.calibration(cams, (pre.post_rot, pre.post_tran))
                logits.append(backend.infer(pre.images[None], calib).float().cpu())
            peak = max(peak, _used_mib())
        if tap is not None:
            logits = tap.logits  # frame by frame, from the scene start
    except Exception as err:  # any backend failure is a row in the table, not a crash
        row.status = f"failed: {type(err).__name__}: {err}"
        return None
    warm = slice(1, None) if len(net) > 1 else slice(None)  # first frame: lazy init, capture
    row.network_median, row.network_p99 = percentile(net[warm], 50), percentile(net[warm], 99)
    row.pipeline_median = percentile(pipe[warm], 50)
    row.pipeline_p99 = percentile(pipe[warm], 99)
    row.peak_mem_mib = peak - base
    row.backend = backend.name
    if reference is not None:
        diffs = [float((a - b).abs().max()) for a, b in zip(logits, reference, strict=True)]
        agree = [
            float((a.argmax(-1) == b.argmax(-1)).float().mean())
            for a, b in zip(logits, reference, strict=True)
        ]
        row.max_abs_diff, row.agreement = max(diffs), float(np.mean(agree))
    return logits


def _candidates(
    cfg: ModelConfig, model: Any, args: argparse.Namespace, work: Path, bundles: list[list[Any]]
) -> list[tuple[Row, Callable[[], Any] | None]]:
    """(row, backend factory or None with row.status saying why) in table order."""
    from flashocc_ros.deploy.engine_meta import EngineError, check_engine_config
    from flashocc_ros.deploy.trt_build import tensorrt_missing_reason
    from flashocc_ros.runtime.backend import TorchBackend
    from flashocc_ros.runtime.cuda_fast import CudaFastBackend

    out: list[tuple[Row, Callable[[], Any] | None]] = [
        (Row("torch-cuda", "fp32"), lambda: TorchBackend(model, cfg, "cuda", "fp32")),
    ]
    if cfg.temporal:  # the fast path is single-frame; plain TorchBackend under fp16 autocast
        out.append((Row("torch-cuda", "fp16"), lambda: TorchBackend(model, cfg, "cuda", "fp16")))
    else:
        out += [
            (Row("torch-fast", "fp32"), lambda: CudaFastBackend(model, cfg, "cuda", "fp32")),
            (Row("torch-fast", "fp16"), lambda: CudaFastBackend(model, cfg, "cuda", "fp16")),
        ]
    import onnxruntime as ort

    ort_row = Row("onnxruntime-cuda", "fp32")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        out.append((ort_row, lambda: _onnxruntime(model, cfg, work)))
    else:
        ort_row.status = "skipped: onnxruntime has no CUDAExecutionProvider"
        out.append((ort_row, None))
    missing = tensorrt_missing_reason()
    try:
        check_engine_config(cfg)
        unsupported = None
    except EngineError as err:
        unsupported = str(err)
    for prec in ("fp32", "fp16", "int8"):
        row = Row("tensorrt", prec)
        if missing is not None or args.skip_tensorrt or unsupported is not None:
            why = "--skip-tensorrt" if args.skip_tensorrt else (unsupported or missing)
            row.status = f"skipped: {why}"
            out.append((row, None))
        else:
            out.append((row, _tensorrt_factory(model, cfg, work, prec, args, bundles)))
    return out


def _onnxruntime(model: Any, cfg: ModelConfig, work: Path) -> Any:
    from flashocc_ros.deploy.onnx_export import export_onnx, weights_sha256
    from flashocc_ros.runtime.onnx_backend import OnnxRuntimeBackend

    export_onnx(model, cfg, work / "onnx")
    backend = OnnxRuntimeBackend(
        work / "onnx",
        cfg,
        weights_sha256(model),
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    return backend


def _temporal_batches(
    model: Any, cfg: ModelConfig, args: argparse.Namespace, bundles: list[list[Any]]
) -> Any:
    """INT8 calibration inputs of a 4D-stereo model: recorded over consecutive frames of
    --calib-bag, or of the check's own moving sequence (with a warning)."""
    from flashocc_ros.deploy.calibration import gather_temporal_calibration, temporal_recorder
    from flashocc_ros.node_config import node_config_from_mapping

    params = node_config_from_mapping({"camera_names": list(cfg.camera_names)})
    if args.calib_bag is not None:
        return gather_temporal_calibration(args.calib_bag, params, cfg, model, 32, 1, "cuda")
    LOG.warning("int8: calibrating on the synthetic sequence (pass --calib-bag for real data)")
    pipeline, recorder = temporal_recorder(model, cfg, params, 32, 1, "cuda")
    for cams in bundles:
        pipeline.process(cams)
    return recorder.batches


def _tensorrt_factory(
    model: Any,
    cfg: ModelConfig,
    work: Path,
    precision: str,
    args: argparse.Namespace,
    bundles: list[list[Any]],
) -> Callable[[], Any]:
    def make() -> Any:
        from flashocc_ros.deploy.calibration import CalibFrame, gather_calibration_frames
        from flashocc_ros.deploy.engine_meta import EngineLayout
        from flashocc_ros.deploy.trt_build import build_engines
        from flashocc_ros.node_config import node_config_from_mapping
        from flashocc_ros.runtime.trt_backend import TensorRTBackend
        from flashocc_ros.tools.compare import random_frames

        layout = EngineLayout(work / "engines", precision)
        frames = None
        batches = None
        if precision == "int8" and cfg.temporal:
            batches = _temporal_batches(model, cfg, args, bundles)
        elif precision == "int8":
            if args.calib_bag is not None:
                params = node_config_from_mapping({"camera_names": list(cfg.camera_names)})
                frames = gather_calibration_frames(args.calib_bag, params, cfg, 32)
            else:
                LOG.warning(
                    "int8: calibrating on synthetic frames (pass --calib-bag for real data)"
                )
                frames = [CalibFrame(f.images, f.calib) for f in random_frames(cfg, 8)]
        build_engines(
            model, cfg, layout, calib_frames=frames, calib_batches=batches, device="cuda"
        )
        return TensorRTBackend(model, cfg, layout.root, precision, "cuda")

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-gpu-selfcheck", description=__doc__)
    parser.add_argument("--model-config", default="demo", help="preset name or model YAML")
    parser.add_argument("--weights", default="", help='weights file, "" (demo) or "random"')
    parser.add_argument("--frames", type=int, default=30, help="bundles per backend (30)")
    parser.add_argument("--out", type=Path, default=Path("gpu_selfcheck.json"), help="JSON")
    parser.add_argument("--work-dir", type=Path, help="export/engines here (default: a temp dir)")
    parser.add_argument("--calib-bag", type=Path, help="rosbag2 for the int8 calibration")
    parser.add_argument("--skip-tensorrt", action="store_true", help="no engine builds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reason = no_cuda_reason()
    if reason is not None:
        print(f"gpu_selfcheck: {reason}; nothing to check (exit {EXIT_NO_CUDA})")
        _write(args.out, {"cuda": False, "reason": reason, "rows": []})
        return EXIT_NO_CUDA
    from flashocc_ros.runtime.factory import load_model

    try:
        if args.frames < 1:
            raise ConfigError("--frames must be >= 1")
        cfg, model = load_model(args.model_config, args.weights)
    except (ConfigError, OSError) as err:
        LOG.error("flashocc-gpu-selfcheck: %s", err)
        return 2
    bundles = synthetic_bundles(cfg, args.frames)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        reference = None
        for row, make in _candidates(cfg, model, args, work, bundles):
            if make is not None:
                logits = run_backend(row, make, cfg, bundles, reference)
                if reference is None and logits is not None:
                    reference = logits  # the first row, plain PyTorch fp32, is the reference
                    row.max_abs_diff, row.agreement = 0.0, 1.0
                    row.extra["reference"] = True
            rows.append(row)
            LOG.info("%s %s: %s", row.backend, row.precision, row.status)
    print(table(rows))
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    _write(
        args.out,
        {
            "cuda": True,
            **info,
            "model": cfg.name,
            "frames": args.frames,
            "rows": [asdict(r) for r in rows],
        },
    )
    return 1 if any(r.status.startswith("failed") for r in rows) else 0


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
