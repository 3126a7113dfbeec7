"""CPU network latency per stage for M0/M1: fp32 eager vs bf16 autocast (+ channels-last).
In: nothing (seeded random weights and images, nuScenes-like rig). Out: a table and JSON.

Run: `source scripts/env.sh; python benchmarks/model_latency.py [--repeats 3] [--json F]`.
Every row is measured in the same run against fp32 eager; compare ratios across machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig


@torch.inference_mode()
def measure(name: str, mode: str, repeats: int) -> tuple[dict[str, float], torch.Tensor]:
    """Median ms per stage of `name` in `mode` (fp32 | bf16 | bf16-cl) and the labels."""
    cfg = model_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if mode == "bf16-cl":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(1)
    imgs = torch.randn(1, cfg.num_cameras, 3, *cfg.input_size, generator=gen)
    model.img_view_transformer.geometry.indices(calib)  # geometry is built once, not per frame
    times: dict[str, list[float]] = {"encode": [], "lift": [], "bev+head": [], "total": []}
    labels = torch.empty(0)
    for i in range(repeats + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            t0 = time.perf_counter()
            feats = model.encode_images(imgs)
            t1 = time.perf_counter()
            bev = model.lift(feats, calib)
            t2 = time.perf_counter()
            logits = model.bev_to_logits(model.frame_bev(bev))
            t3 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        stages = ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3)
        for key, val in zip(times, stages, strict=True):
            times[key].append(val)
        labels = logits.float().argmax(-1)
    return {k: statistics.median(v) for k, v in times.items()}, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["flashocc-r50-M0", "flashocc-r50"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        base, ref = measure(name, "fp32", args.repeats)
        for mode in ("fp32", "bf16", "bf16-cl"):
            t, lab = (base, ref) if mode == "fp32" else measure(name, mode, args.repeats)
            agree = float((lab == ref).float().mean())
            rows.append({"model": name, "mode": mode, **t, "speedup": base["total"] / t["total"],
                         "argmax_agreement": agree})  # fmt: skip
    head = f"{'model':<18}{'mode':<9}{'encode':>9}{'lift':>8}{'bev+head':>10}{'total ms':>10}"
    print(head + f"{'vs fp32':>9}{'argmax':>9}")
    for r in rows:
        print(
            f"{r['model']:<18}{r['mode']:<9}{r['encode']:>9.0f}{r['lift']:>8.0f}"
            f"{r['bev+head']:>10.0f}{r['total']:>10.0f}{r['speedup']:>8.2f}x"
            f"{100 * r['argmax_agreement']:>8.2f}%"
        )
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, random weights")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
