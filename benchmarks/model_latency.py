"""Row groups 5 and 6: network latency per stage, fp32 eager vs faster paths, argmax agreement.
In: a model preset (seeded random weights, or the shipped demo weights on a data/val sample) and
seeded images. Out: per-mode stage medians and rows (speed-up vs fp32, argmax agreement).

Modes on a CPU: fp32 eager, bf16 autocast, bf16 autocast + channels-last, ONNX Runtime (the
exported graphs A/B with `bev_pool` between them, `OnnxRuntimeBackend`). On CUDA: fp32, fp16
and bf16 autocast, fp16 + channels-last, ONNX Runtime CUDA when its provider exists. Stages
follow the ONNX split so that every mode reports the same ones: image (backbone, neck, depth
net, softmax), pool (BEV pooling with cached indices), bev+head (BEV encoder, neck, occupancy
head), total. Modes run round-robin in one process; the fp32 labels are the reference.

Standalone: `source scripts/env.sh; python benchmarks/model_latency.py [--repeats 3] [--json F]`
(the whole suite: benchmarks/run_all.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `flashocc_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, skipped_row
from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.config import GridConfig, ModelConfig, model_config
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import preprocess_images, rig_calibration
from flashocc_ros.rig import nuscenes_like_rig

if TYPE_CHECKING:
    from flashocc_ros.world.dataset import WorldDataset

STAGES = ("image", "pool", "bev+head", "total")
CPU_MODES = ("fp32", "bf16", "bf16-cl", "onnxruntime")
GPU_MODES = ("fp32", "fp16", "bf16", "fp16-cl", "onnxruntime")
DEMO_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "flashocc_ros" / "weights" / "demo.safetensors"
)
DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "val"
VAL_SEED = 2  # world seed of the validation scenes (training: 1, demo: 900)

Runner = Callable[[], tuple[dict[str, float], Tensor]]


@dataclass
class ModeResult:
    """Median stage times (ms) of one mode and the labels (X, Y, Z) of its last run."""

    stages: dict[str, float]
    labels: Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_runner(
    model: FlashOCC, imgs: Tensor, calib: Calibration, dtype: torch.dtype | None
) -> Runner:
    """One timed forward of `model` by stages, optionally under autocast to `dtype`."""
    device = imgs.device

    @torch.inference_mode()
    def run() -> tuple[dict[str, float], Tensor]:
        vt = model.img_view_transformer
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            t0 = time.perf_counter()
            feats = model.encode_images(imgs)
            depth, context = model.depth_context(feats, calib)
            _sync(device)
            t1 = time.perf_counter()
            bev = vt.splat(depth, context, vt.geometry.indices(calib))
            _sync(device)
            t2 = time.perf_counter()
            logits = model.bev_to_logits(model.frame_bev(bev))
            labels = logits.argmax(-1)
            _sync(device)
            t3 = time.perf_counter()
        ms = (t1 - t0, t2 - t1, t3 - t2, t3 - t0)
        return {k: v * 1e3 for k, v in zip(STAGES, ms, strict=True)}, labels[0].cpu()

    return run


def onnx_runner(
    model: FlashOCC, cfg: ModelConfig, imgs: Tensor, calib: Calibration, folder: Path, cuda: bool
) -> Runner | str:
    """The ONNX Runtime backend over a fresh export of `model`, or why it cannot run."""
    try:
        import onnxruntime as ort

        from flashocc_ros.deploy.onnx_export import export_onnx
        from flashocc_ros.runtime.onnx_backend import (
            CPU_PROVIDER,
            CUDA_PROVIDER,
            OnnxRuntimeBackend,
        )
    except ImportError as err:
        return f"skipped: onnxruntime/onnx not importable ({err})"
    if cuda and CUDA_PROVIDER not in ort.get_available_providers():
        return "skipped: this onnxruntime has no CUDAExecutionProvider"
    export_onnx(copy.deepcopy(model).cpu(), cfg, folder)
    providers = [CUDA_PROVIDER, CPU_PROVIDER] if cuda else [CPU_PROVIDER]
    backend = OnnxRuntimeBackend(folder, cfg, None, providers)

    def run() -> tuple[dict[str, float], Tensor]:
        labels = backend.infer(imgs, calib).argmax(-1)
        t = backend.last_stage_timings_ms()
        stages = (t["image_graph"], t["pooling"], t["bev_graph"], t["backend_total"])
        return dict(zip(STAGES, stages, strict=True)), labels[0]

    return run


def runners(
    model: FlashOCC, cfg: ModelConfig, imgs: Tensor, calib: Calibration, modes: tuple[str, ...],
    folder: Path,
) -> dict[str, Runner | str]:  # fmt: skip
    """A runner (or a skip reason) per mode; channels-last modes get their own model copy."""
    out: dict[str, Runner | str] = {}
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    for mode in modes:
        if mode == "onnxruntime":
            out[mode] = onnx_runner(model, cfg, imgs, calib, folder, imgs.device.type == "cuda")
            continue
        m = model
        if mode.endswith("-cl"):
            m = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        out[mode] = torch_runner(m, imgs, calib, dtypes.get(mode.removesuffix("-cl")))
    return out


def measure(
    model: FlashOCC, cfg: ModelConfig, imgs: Tensor, calib: Calibration,
    modes: tuple[str, ...], repeats: int,
) -> dict[str, ModeResult | str]:  # fmt: skip
    """Stage medians per mode, the modes called round-robin after one warm-up round."""
    model.img_view_transformer.geometry.indices(calib)  # geometry built once, not timed
    with tempfile.TemporaryDirectory(prefix="flashocc-bench-onnx-") as tmp:
        runs = runners(model, cfg, imgs, calib, modes, Path(tmp))
        live = {k: r for k, r in runs.items() if not isinstance(r, str)}
        samples: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in live}
        labels: dict[str, Tensor] = {}
        for i in range(repeats + 1):
            for mode, run in live.items():
                stages, labels[mode] = run()
                if i > 0:
                    for s in STAGES:
                        samples[mode][s].append(stages[s])
    out: dict[str, ModeResult | str] = {}
    for mode, r in runs.items():
        if isinstance(r, str):
            out[mode] = r
            continue
        med = {s: float(torch.tensor(v).median()) for s, v in samples[mode].items()}
        out[mode] = ModeResult(med, labels[mode])
    return out


def random_inputs(cfg: ModelConfig, device: torch.device) -> tuple[Tensor, Calibration]:
    """Seeded normalised images (1, N, 3, H, W) and the nuScenes-like rig's calibration."""
    gen = torch.Generator().manual_seed(1)
    imgs = torch.randn(1, cfg.num_cameras, 3, *cfg.input_size, generator=gen)
    return imgs.to(device), rig_calibration(nuscenes_like_rig(), cfg.input_size).to(device)


def demo_inputs(cfg: ModelConfig) -> tuple[Tensor, Calibration, str] | str:
    """Images and calibration of the first data/val keyframe for the demo model; without a
    data/val folder, one keyframe of a held-out scene rendered now (val seed, a few seconds)."""
    from flashocc_ros.world.dataset import WorldDataset

    try:
        return _keyframe_inputs(WorldDataset(DEMO_DATA), cfg, "data/val")
    except Exception:  # no data/val on this machine: render one held-out keyframe instead
        pass
    try:
        with tempfile.TemporaryDirectory(prefix="flashocc-bench-") as tmp:
            data = _render_val_keyframe(Path(tmp) / "val")
            return _keyframe_inputs(data, cfg, f"rendered (seed {VAL_SEED}, no data/val)")
    except Exception as err:  # the row is optional
        return f"skipped: no data/val and rendering a keyframe failed ({err})"


def _keyframe_inputs(
    data: WorldDataset, cfg: ModelConfig, source: str
) -> tuple[Tensor, Calibration, str]:
    """Preprocessed images (1, N, 3, H, W) and calibration of keyframe 0 of `data`."""
    sample = data.sample(0)
    pre = preprocess_images(list(sample.images), cfg.input_size)
    calib = Calibration.from_numpy_like(
        torch.as_tensor(sample.sensor_to_keyego, dtype=torch.float32),
        torch.as_tensor(sample.intrinsics, dtype=torch.float32),
        pre.post_rot,
        pre.post_tran,
    )
    return pre.images[None], calib, f"{source} keyframe {sample.token}"


def _render_val_keyframe(root: Path) -> WorldDataset:
    """A one-keyframe dataset folder at `root` of validation scene seed VAL_SEED, 704x396."""
    from flashocc_ros.world.dataset import DatasetWriter, WorldDataset
    from flashocc_ros.world.generate import GenerateConfig, generate

    gen = GenerateConfig(1, 1, VAL_SEED, 704, 396, keyframes_only=True)
    rig = nuscenes_like_rig(gen.width, gen.height)
    writer = DatasetWriter(root, rig, GridConfig())
    generate(gen, writer, None, rig=rig)
    writer.close()
    return WorldDataset(root)


def model_rows(
    group: str, label: str, results: dict[str, ModeResult | str], target: bool
) -> list[Row]:
    """One row per non-fp32 mode (speed-up, agreement) and a 'fastest' row with the target."""
    base = results["fp32"]
    if isinstance(base, str):
        return [skipped_row(group, f"{label} fastest path", f"{label} fp32", base)]
    rows: list[Row] = []
    ref_free = base.labels == FREE_LABEL
    best: Row | None = None
    for mode, r in results.items():
        if mode == "fp32":
            continue
        if isinstance(r, str):
            rows.append(skipped_row(group, f"{label} {mode}", f"{label} fp32 eager", r))
            continue
        agree = float((r.labels == base.labels).float().mean())
        occupied = ~ref_free
        agree_occ = (
            float((r.labels[occupied] == base.labels[occupied]).float().mean())
            if bool(occupied.any())
            else 1.0
        )
        extra: dict[str, Any] = {
            "stages_ms": r.stages,
            "fp32_stages_ms": base.stages,
            "argmax_agreement": agree,
            "argmax_agreement_occupied": agree_occ,
        }
        row = Row(
            group,
            f"{label} {mode}",
            f"{label} fp32 eager",
            r.stages["total"],
            base.stages["total"],
            base.stages["total"] / r.stages["total"],
            "speedup",
            extra=extra,
        )
        rows.append(row)
        if agree >= 0.99 and (best is None or (row.ratio or 0) > (best.ratio or 0)):
            best = row
    if best is not None:
        agreement = best.extra["argmax_agreement"]
        rows.append(
            Row(
                group,
                f"{label} fastest: {best.name.removeprefix(label + ' ')}",
                f"{label} fp32 eager",
                best.ours_ms,
                best.baseline_ms,
                best.ratio,
                "speedup",
                ">= 2" if target else "",
                extra=dict(best.extra),
                met=None if not target else bool((best.ratio or 0) >= 2 and agreement >= 0.99),
            )
        )
    return rows


def run(
    quick: bool, repeats: int, device: str = "cpu"
) -> tuple[list[Row], dict[str, dict[str, float]]]:
    """Rows of group 5 (CPU) or 6 (CUDA) and, per model, the fp32 and fastest total ms."""
    dev = torch.device(device)
    group = "5 cpu-network" if dev.type == "cpu" else "6 gpu-network"
    modes = CPU_MODES if dev.type == "cpu" else GPU_MODES
    if quick:
        modes = tuple(m for m in modes if m not in ("bf16", "fp16"))
    names = ("tiny",) if quick else ("flashocc-r50-M0", "flashocc-r50")
    rows: list[Row] = []
    network: dict[str, dict[str, float]] = {}
    for name in names:
        cfg = model_config(name)
        torch.manual_seed(0)
        model = build_model(cfg).eval().to(dev)
        imgs, calib = random_inputs(cfg, dev)
        results = measure(model, cfg, imgs, calib, modes, repeats)
        label = f"{name} (random weights)"
        new_rows = model_rows(group, label, results, target=not quick)
        rows += new_rows
        fastest = [r for r in new_rows if " fastest: " in r.name]
        if fastest and fastest[0].ours_ms is not None and fastest[0].baseline_ms is not None:
            network[name] = {"fp32": fastest[0].baseline_ms, "fastest": fastest[0].ours_ms}
        del model
    if not quick and dev.type == "cpu":
        rows += demo_rows(group, repeats)
    return rows, network


def demo_rows(group: str, repeats: int) -> list[Row]:
    """Agreement (and speed) on the shipped demo weights with a real synthetic frame."""
    label = "demo (trained weights, held-out frame)"
    if not DEMO_WEIGHTS.is_file():
        return [skipped_row(group, label, "fp32", f"skipped: no {DEMO_WEIGHTS}")]
    from flashocc_ros.model.checkpoint import load_flashocc

    model, cfg = load_flashocc(DEMO_WEIGHTS)
    inputs = demo_inputs(cfg)
    if isinstance(inputs, str):
        return [skipped_row(group, label, "fp32", inputs)]
    imgs, calib, what = inputs
    results = measure(model, cfg, imgs, calib, CPU_MODES, repeats)
    rows = model_rows(group, label, results, target=False)
    for r in rows:
        r.extra["input"] = what
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows, _ = run(args.quick, args.repeats, args.device)
    from benchmarks.run_all import print_table

    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1))


if __name__ == "__main__":
    main()
