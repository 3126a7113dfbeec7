"""The one-command demo: a synthetic bag replayed through the real node over ROS 2, then scored.
In: nothing (seeded). Out: out/demo/ with the bag, recorded grids, pictures and a report.

Steps: generate unseen synthetic scenes (dataset folder + rosbag2) -> start the node with the
demo weights -> replay the bag into it over DDS -> record its occupancy -> Occ3D mIoU against the
bag's ground truth -> BEV / 3D / camera-overlay pictures of prediction vs ground truth.

`--out` is emptied only when the demo made it: a folder it creates gets a marker file
(`.flashocc-demo`), and a later run deletes only the demo's own entries from a marked folder.
Any other existing, non-empty folder is refused with one line unless `--force` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from flashocc_ros.eval.metrics import MiouMetric, RangeMiou
from flashocc_ros.runtime.factory import DEMO_WEIGHTS
from flashocc_ros.safe_io import disk_error_line, write_text
from flashocc_ros.world.dataset import WorldDataset

LOG = logging.getLogger("demo")
#: Held-out world seed: scenes 900000+ are never used for training (train: 1, val: 2).
DEMO_SEED = 900
#: Written into a folder the demo creates: proves to a later run that the folder is its own.
MARKER = ".flashocc-demo"
#: The entries the demo writes into --out; a later run removes only these from a marked folder.
OUTPUTS = frozenset({"data", "bag", "live", "pictures", "report.txt", MARKER})


class OutError(ValueError):
    """--out cannot be used without deleting something the demo did not write."""


def prepare_out(out: Path, force: bool) -> None:
    """Make `out` an empty folder that carries the demo's marker.

    Deletes only the demo's own previous output (the entries in OUTPUTS of a marked folder),
    or, with `force`, the whole folder. Raises OutError (one line) for anything else.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutError(f"--out {out} exists and is not a folder; choose another --out")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        marked = (out / MARKER).is_file()
        foreign = [e for e in entries if not marked or e not in OUTPUTS]
        if foreign and not force:
            why = (
                f"holds files the demo did not write ({', '.join(foreign[:3])})"
                if marked
                else f"was not made by the demo (no {MARKER} marker in it)"
            )
            raise OutError(
                f"--out {out} {why}; choose another --out, or pass --force to delete the folder "
                "and everything in it"
            )
        if force and foreign:
            LOG.warning("demo: --force: deleting %s and everything in it", out)
            shutil.rmtree(out)
        else:
            for name in entries:  # the demo's own output of an earlier run
                path = out / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by flashocc-demo: a later demo run may empty this folder\n")


def _run(cmd: list[str], what: str) -> None:
    LOG.info("demo: %s", what)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"demo: FAILED while {what} (exit {proc.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--keyframes", type=int, default=10, help="2 Hz keyframes to replay")
    parser.add_argument("--width", type=int, default=704, help="camera image width, px")
    parser.add_argument("--height", type=int, default=396, help="camera image height, px")
    parser.add_argument("--rate", type=float, default=0.2, help="bag playback speed factor")
    parser.add_argument("--weights", default="", help="weights (default: shipped demo weights)")
    parser.add_argument("--model-config", default="demo")
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete --out and everything in it even when the demo did not make it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    secs = 60 + args.keyframes * (3 + 1 / (2 * args.rate))
    LOG.info(
        "demo: six synthetic cameras -> flashocc node over ROS 2 -> occupancy, scored against "
        "ground truth. This takes about %.0f minutes on a 2-core CPU.",
        secs / 60,
    )
    if not args.weights and args.model_config == "demo" and not DEMO_WEIGHTS.is_file():
        LOG.error("demo: the shipped demo weights %s are missing", DEMO_WEIGHTS)
        return 2
    out = args.out
    try:
        prepare_out(out, args.force)
    except OutError as err:
        LOG.error("demo: %s", err)
        return 2
    except OSError as err:
        LOG.error("demo: %s", disk_error_line(err, out))
        return 2
    t0 = time.monotonic()
    _run(
        [
            sys.executable,
            "-m",
            "flashocc_ros.tools.world",
            "generate",
            "--out",
            str(out / "data"),
            "--bag",
            str(out / "bag"),
            "--scenes",
            "1",
            "--keyframes",
            str(args.keyframes),
            "--seed",
            str(DEMO_SEED),
            "--width",
            str(args.width),
            "--height",
            str(args.height),
            "--keyframes-only",
        ],
        f"rendering {args.keyframes} keyframes of an unseen scene (seed {DEMO_SEED}) "
        f"into a rosbag2 at {args.width}x{args.height}",
    )
    t_gen = time.monotonic() - t0
    weights = args.weights or str(DEMO_WEIGHTS)
    params = [f"--param=model_config={args.model_config}", f"--param=weights={weights}"]
    _run(
        [
            sys.executable,
            "-m",
            "flashocc_ros.ros.live_run",
            "--bag",
            str(out / "bag"),
            "--out",
            str(out / "live"),
            "--expected",
            str(args.keyframes),
            "--rate",
            str(args.rate),
            "--timeout",
            str(max(300.0, 30 * args.keyframes)),
            *params,
        ],
        "starting the flashocc node, replaying the bag into it over DDS, recording its output",
    )
    run = json.loads((out / "live" / "run.json").read_text())
    t_live = time.monotonic() - t0 - t_gen

    ds = WorldDataset(out / "data")
    by_stamp = {rec.stamp_ns: i for i, rec in enumerate(ds.keyframes)}
    metric = MiouMetric()
    rings = RangeMiou()
    preds: dict[int, np.ndarray] = {}
    for path in sorted((out / "live" / "npz").glob("*.npz")):
        stamp = int(path.stem)
        if stamp in by_stamp:
            with np.load(path) as z:
                preds[stamp] = z["semantics"]
            labels = ds.labels(ds.keyframes[by_stamp[stamp]])
            metric.add(preds[stamp], labels.semantics, labels.mask_camera)
            rings.add(preds[stamp], labels.semantics, labels.mask_camera)
    if not preds:
        LOG.error("demo: the node produced no grid matching the bag's keyframes")
        return 1
    result = metric.result()
    mid = sorted(preds)[len(preds) // 2]
    from flashocc_ros.tools.world import render_pictures

    pictures = render_pictures(ds, by_stamp[mid], preds[mid], out / "pictures")

    lat = {k: statistics.median(v) for k, v in run["latency_ms"].items() if v}
    lines = [
        "",
        "=" * 72,
        "flashocc_ros demo report",
        "=" * 72,
        f"frames: {len(ds)} keyframes played, {run['occupancy']} grids received from the node "
        f"({run['markers']} marker arrays, {run['points']} point clouds, "
        f"{run['bev_images']} BEV images), backend {run['diagnostics'].get('backend', '?')}",
        "latency per stage, median ms (node, this CPU): "
        + ", ".join(f"{k} {v:.0f}" for k, v in lat.items()),
        *_missing_grids(len(ds), run["occupancy"], run["diagnostics"]),
        f"wall time: generate {t_gen:.0f} s, live replay {t_live:.0f} s",
        "",
        f"Occ3D mIoU (classes 0-16, camera mask) over {len(preds)} frames: "
        f"{100 * result.miou:.2f} %",
        *_recorded_evaluation(weights),
        result.table(),
        rings.line(),
        "",
        "pictures (ground truth | prediction):",
        *[f"  {p}" for p in pictures],
        f"recorded grids: {out / 'live' / 'npz'}    node log: {out / 'live' / 'node.log'}",
    ]
    report = "\n".join(lines)
    write_text(out / "report.txt", report + "\n")
    sys.stdout.write(report + "\n")
    return 0


def _missing_grids(played: int, received: int, diagnostics: dict[str, str]) -> list[str]:
    """One line saying why fewer grids than keyframes came back, from the node's last
    diagnostics (its drop and failure counters), or nothing when every keyframe came back."""
    if received >= played:
        return []
    skip = ("count.images_in.", "count.bundles_processed")
    reasons = [
        f"{k.removeprefix('count.')} {v}"
        for k, v in sorted(diagnostics.items())
        if (k.startswith("count.") or k == "queue.superseded")
        and not k.startswith(skip)
        and v not in ("0", "")
    ]
    images = sorted(
        f"{k.removeprefix('count.images_in.')} {v}"
        for k, v in diagnostics.items()
        if k.startswith("count.images_in.")
    )
    why = ", ".join(reasons) or "no drop or failure counted (images lost before the node?)"
    return [
        f"missing: {played - received} of {played} keyframes gave no grid; node counters: {why}; "
        f"images received per camera: {', '.join(images) or 'none'} (see the node log)"
    ]


def _recorded_evaluation(weights: str) -> list[str]:
    """The held-out evaluation recorded with the shipped demo weights (a line to compare this
    run's mIoU with), or nothing for other weights or a missing/unreadable record."""
    if Path(weights).resolve() != DEMO_WEIGHTS.resolve():
        return []
    try:
        packed = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())["packed"]
        miou, frames = float(packed["heldout_miou_packed_weights"]), int(packed["heldout_frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [
        f"recorded held-out evaluation of these weights: {100 * miou:.2f} % over {frames} frames "
        f"of other unseen scenes ({DEMO_WEIGHTS.with_suffix('.json').name}); a few scenes "
        "scatter by several points around it"
    ]


if __name__ == "__main__":
    sys.exit(main())
