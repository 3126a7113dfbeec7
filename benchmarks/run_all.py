"""The benchmark suite: every speed claim of the package, each against its baseline in one run.
In: nothing (seeded inputs; the shipped demo weights and data/val when present). Out: a table on
stdout naming the machine, and with --json the same rows as JSON.

Run after `source scripts/env.sh` (ROS rows need rclpy):
    python benchmarks/run_all.py [--quick] [--repeats N] [--json out.json]
Row groups (one module each): 1 bench_voxel_head, 2 bench_bev_pool, 3 bench_markers,
4 bench_node_overhead, 5/6 model_latency (CPU, and CUDA when available). Ratios are the claims;
absolute CPU milliseconds depend on the machine and its load. docs/benchmarks.md has the method.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `flashocc_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import (
    bench_bev_pool,
    bench_markers,
    bench_node_overhead,
    bench_voxel_head,
    model_latency,
)
from benchmarks.common import Row, machine_info, skipped_row

KIND_TEXT = {"ours/baseline": "x base", "speedup": "x faster", "fraction": "of base"}


def gpu_rows(quick: bool, repeats: int) -> list[Row]:
    if not torch.cuda.is_available():
        return [
            skipped_row(
                "6 gpu-network",
                f"{m} per-stage torch fp32/fp16, onnxruntime-cuda",
                "fp32 eager on CUDA",
                "skipped: no CUDA",
            )
            for m in ("flashocc-r50-M0", "flashocc-r50")
        ]
    rows, _ = model_latency.run(quick, repeats, "cuda")
    return rows


def run_suite(quick: bool, repeats: int) -> tuple[list[Row], dict[str, float]]:
    """All row groups in order; returns the rows and the seconds each group took."""
    rows: list[Row] = []
    seconds: dict[str, float] = {}

    def timed(group: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        seconds[group] = time.perf_counter() - t0
        print(f"  done {group} in {seconds[group]:.1f} s", file=sys.stderr, flush=True)
        return out

    cpu_rows, network = timed("5 cpu-network", model_latency.run, quick, repeats)
    rows += timed("1 c2h-vs-3d", bench_voxel_head.run, quick, repeats)
    rows += timed("2 bev-pool", bench_bev_pool.run, quick, repeats)
    rows += timed("3 markers", bench_markers.run, quick, repeats)
    node_repeats = 1 if quick else repeats
    rows += timed("4 node-overhead", bench_node_overhead.run, quick, node_repeats, network)
    rows += cpu_rows
    rows += timed("6 gpu-network", gpu_rows, quick, repeats)
    return rows, seconds


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def print_table(rows: list[Row]) -> None:
    """Fixed-width table: group, ours vs baseline, ms, ratio, target and whether it is met."""
    head = f"{'group':<16}{'ours':<52}{'baseline':<46}{'ours ms':>10}{'base ms':>10}"
    print(head + f"{'ratio':>18}{'target':>9}{'met':>5}")
    for r in rows:
        if r.skipped:
            print(f"{r.group:<16}{r.name[:51]:<52}{r.baseline[:45]:<46}  {r.skipped}")
            continue
        ratio = f"{_fmt(r.ratio, '.3g')} {KIND_TEXT[r.ratio_kind]}"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        print(
            f"{r.group:<16}{r.name[:51]:<52}{r.baseline[:45]:<46}{_fmt(r.ours_ms):>10}"
            f"{_fmt(r.baseline_ms):>10}{ratio:>18}{r.target:>9}{met:>5}"
        )
        note = _note(r)
        if note:
            print(f"{'':<16}  {note}")


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (for docs/benchmarks.md)."""
    lines = [
        "| group | ours | baseline | ours ms | baseline ms | ratio | target | met | notes |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.group} | {r.name} | {r.baseline} | | | | {r.target} | | "
                         f"{r.skipped} |")  # fmt: skip
            continue
        ratio = f"{_fmt(r.ratio, '.3g')} {KIND_TEXT[r.ratio_kind]}"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.group} | {r.name} | {r.baseline} | {_fmt(r.ours_ms)} | "
            f"{_fmt(r.baseline_ms)} | {ratio} | {r.target} | {met} | {_note(r)} |"
        )
    return "\n".join(lines) + "\n"


def _note(r: Row) -> str:
    e = r.extra
    if "c2h_peak_mib" in e and r.ours_ms is None:
        return f"peak tensor MiB: c2h {e['c2h_peak_mib']:.0f} vs 3d {e['3d_peak_mib']:.0f}"
    if "c2h_gmac" in e:
        return (
            f"GMAC c2h {e['c2h_gmac']:.1f} vs 3d {e['3d_gmac']:.1f}; GFLOP/s c2h "
            f"{e['c2h_gflops']:.0f} vs 3d {e['3d_gflops']:.0f}; grid {e['grid_xyz']}"
        )
    if "argmax_agreement" in e:
        st = e["stages_ms"]
        return (
            f"argmax agreement {100 * e['argmax_agreement']:.2f}% (occupied "
            f"{100 * e['argmax_agreement_occupied']:.2f}%); stages ms image {st['image']:.0f}, "
            f"pool {st['pool']:.0f}, bev+head {st['bev+head']:.0f}"
        )
    if "breakdown" in e:
        frac = ", ".join(f"{k} {100 * v:.1f}%" for k, v in e["fraction_of"].items())
        return f"ms: {e['breakdown']}; share of: {frac}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (~30 s)")
    parser.add_argument("--repeats", type=int, help="timed repeats per row (default 5, quick 2)")
    parser.add_argument("--json", type=Path, help="write the rows and machine facts here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    repeats = args.repeats or (2 if args.quick else 5)
    before = machine_info()
    t0 = time.perf_counter()
    rows, seconds = run_suite(args.quick, repeats)
    after = machine_info()
    machine = {
        **before,
        "loadavg_1min_end": after["loadavg_1min"],
        "training_running_end": after["training_running"],
    }
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), onnxruntime {machine['onnxruntime']}, "
        f"GPU {machine['gpu'] or 'none'}; load {machine['loadavg_1min']:.1f} -> "
        f"{after['loadavg_1min']:.1f}; training run in background: "
        f"{machine['training_running'] or after['training_running']}"
    )
    print(
        f"mode: {'quick' if args.quick else 'full'}, median of {repeats} repeats after 1 warm-up"
    )
    print_table(rows)
    wall = time.perf_counter() - t0
    print(f"suite took {wall:.0f} s")
    if args.markdown:
        args.markdown.write_text(markdown_table(rows))
    if args.json:
        doc = {
            "mode": "quick" if args.quick else "full",
            "repeats": repeats,
            "machine": machine,
            "seconds": {**seconds, "total": wall},
            "rows": [r.to_dict() for r in rows],
        }
        args.json.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
