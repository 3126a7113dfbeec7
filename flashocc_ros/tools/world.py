"""Command line for the synthetic world: generate, evaluate, check the ground truth, render.
In: `python -m flashocc_ros.tools.world {generate,evaluate,check,render} ...`. Out: files, reports.

User mistakes print one `error: ...` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.config import ConfigError, GridConfig
from flashocc_ros.eval import visualize as vis
from flashocc_ros.eval.metrics import MiouMetric, RangeMiou
from flashocc_ros.eval.sources import SourceError, match, read_ground_truth, read_predictions
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.world.bag import BagWriter
from flashocc_ros.world.check import CheckError, check_folder
from flashocc_ros.world.dataset import DatasetError, DatasetWriter, WorldDataset
from flashocc_ros.world.generate import GenerateConfig, generate, generate_parallel

log = logging.getLogger("flashocc_ros.tools.world")


class UsageError(ValueError):
    """A mistake in the command line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flashocc_ros.tools.world", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="render scenes into a dataset folder and/or a rosbag2")
    g.add_argument("--out", type=Path, help="dataset folder to create")
    g.add_argument("--bag", type=Path, help="rosbag2 folder to create")
    g.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    g.add_argument("--keyframes", type=int, default=20, help="2 Hz keyframes per scene")
    g.add_argument("--seed", type=int, default=0, help="scene i uses seed*1000+i")
    g.add_argument("--width", type=int, default=1600, help="image width px (default 1600)")
    g.add_argument("--height", type=int, default=900, help="image height px (default 900)")
    g.add_argument("--keyframes-only", action="store_true", help="skip the 12 Hz sweeps")
    g.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="bag storage")
    g.add_argument("--compressed", action="store_true", help="jpeg CompressedImage in the bag")
    g.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                   help="dataset image files")  # fmt: skip
    g.add_argument("--mask-width", type=int, default=200, help="camera-mask ray grid width")
    g.add_argument("--depth", action="store_true",
                   help="also store depth maps (16-bit PNG, cm)")  # fmt: skip
    g.add_argument("--classes", action="store_true",
                   help="also store per-pixel class maps (8-bit PNG, 17 = sky)")  # fmt: skip
    g.add_argument("--workers", type=int, default=1,
                   help="processes rendering scenes in parallel (dataset folders only; "
                   "default 1)")  # fmt: skip

    e = sub.add_parser("evaluate", help="Occ3D mIoU of predictions against ground truth")
    e.add_argument("--gt", type=Path, required=True, help="dataset folder or bag")
    e.add_argument("--pred", type=Path, required=True, help="folder of npz or bag")
    e.add_argument("--pred-topic", help="Occupancy topic in a prediction bag (default: first "
                   "one that is not ground truth)")  # fmt: skip

    c = sub.add_parser("check", help="project a bag's ground truth into its images: per class, "
                       "how many voxels hold a surface of their class")  # fmt: skip
    c.add_argument("--bag", type=Path, required=True, help="generated bag")
    c.add_argument("--data", type=Path, required=True,
                   help="dataset folder generated with it (--depth --classes)")  # fmt: skip

    r = sub.add_parser("render", help="pictures of one keyframe of a dataset folder")
    r.add_argument("--data", type=Path, required=True, help="dataset folder")
    r.add_argument("--index", type=int, default=0, help="keyframe index (default 0)")
    r.add_argument("--pred", type=Path, help="npz with 'semantics' to show beside the truth")
    r.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    return p


def _generate(a: argparse.Namespace) -> None:
    if a.out is None and a.bag is None:
        raise UsageError("generate needs --out (dataset folder) and/or --bag")
    if a.bag is not None and a.bag.exists():
        raise UsageError(f"bag {a.bag} already exists")
    if a.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {a.workers}")
    if a.workers > 1 and a.bag is not None:
        raise UsageError("--workers renders dataset folders only (a bag is written in time "
                         "order); leave it out with --bag")  # fmt: skip
    try:
        cfg = GenerateConfig(
            num_scenes=a.scenes, num_keyframes=a.keyframes, seed=a.seed, width=a.width,
            height=a.height, keyframes_only=a.keyframes_only, mask_width=a.mask_width,
            save_depth=a.depth, save_classes=a.classes,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from err
    rig = nuscenes_like_rig(a.width, a.height)
    ds = DatasetWriter(a.out, rig, GridConfig(), a.image_format) if a.out is not None else None
    total = cfg.num_scenes * cfg.frames_per_scene()
    with tqdm(total=total, unit="frame", desc="generate") as bar:
        if a.bag is not None:
            with BagWriter(a.bag, rig, storage=a.format, compressed=a.compressed) as bag:
                generate(cfg, ds, bag, rig=rig, progress=bar.update)
        elif a.workers > 1 and ds is not None:
            generate_parallel(cfg, ds, min(a.workers, cfg.num_scenes), rig=rig,
                              progress=bar.update)  # fmt: skip
        else:
            generate(cfg, ds, None, rig=rig, progress=bar.update)
    if ds is not None:
        ds.close()
    log.info("done: %d frames", total)


def _evaluate(a: argparse.Namespace) -> None:
    gt = read_ground_truth(a.gt)
    pred = read_predictions(a.pred, a.pred_topic)
    pairs = match(gt, pred)
    if not pairs:
        raise UsageError(f"no prediction in {a.pred} matches a ground-truth keyframe in {a.gt}")
    metric = MiouMetric()
    rings = RangeMiou()
    for _, p, g, m in tqdm(pairs, unit="frame", desc="evaluate"):
        if p.shape != g.shape:
            raise UsageError(f"prediction shape {p.shape} != ground truth {g.shape} (X, Y, Z)")
        metric.add(p, g, m)
        if g.shape == rings.shape:
            rings.add(p, g, m)
    sys.stdout.write(metric.result().table() + "\n")
    if rings.num_frames:
        sys.stdout.write(rings.line() + "\n")


def _check(a: argparse.Namespace) -> None:
    sys.stdout.write(check_folder(a.bag, a.data).table() + "\n")


def _render(a: argparse.Namespace) -> None:
    ds = WorldDataset(a.data)
    if not 0 <= a.index < len(ds):
        raise UsageError(f"--index {a.index} out of range: the dataset has {len(ds)} keyframes")
    sample = ds.sample(a.index)
    assert sample.labels is not None
    sem = sample.labels.semantics
    pred = None
    if a.pred is not None:
        try:
            with np.load(a.pred) as z:
                pred = z["semantics"]
        except (OSError, KeyError, ValueError) as err:
            raise UsageError(f"cannot read 'semantics' from {a.pred}: {err}") from err
        if pred.shape != sem.shape:
            raise UsageError(f"prediction shape {pred.shape} != ground truth {sem.shape}")
    render_pictures(ds, a.index, pred, a.out)


def render_pictures(
    ds: WorldDataset, index: int, pred: np.ndarray | None, out: Path
) -> list[Path]:
    """BEV map, 3D voxel view and camera overlays of keyframe `index` (GT vs prediction), each
    with a class legend and a title bar (keyframe, stamp and, with a prediction, its mIoU)."""
    sample = ds.sample(index)
    assert sample.labels is not None
    sem, mask = sample.labels.semantics, sample.labels.mask_camera
    grids = [sem] + ([pred] if pred is not None else [])
    miou = None
    if pred is not None:
        metric = MiouMetric()
        metric.add(pred, sem, mask)
        miou = metric.result().miou
    title = picture_title(sample.token, sample.stamp_ns, miou)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    notes: Sequence[str]
    for step in tqdm(["bev", "voxels", "cameras"], desc="render", unit="picture"):
        if step == "cameras":
            pics = [
                vis.camera_mosaic(
                    [
                        vis.camera_overlay(img, g, k, s2k, ds.grid)
                        for img, k, s2k in zip(sample.images, sample.intrinsics,
                                               sample.sensor_to_keyego, strict=True)
                    ],
                    names=ds.rig.names,
                )
                for g in grids
            ]  # fmt: skip
            labels, notes = vis.present_labels(grids), ()
        else:
            draw = vis.bev_image if step == "bev" else vis.voxel_view
            pics = [draw(g, mask=mask, grid=ds.grid) for g in grids]
            labels = [*vis.present_labels(grids, mask), FREE_LABEL]
            notes = vis.BEV_NOTES if step == "bev" else vis.VOXEL_NOTES
        pic = (
            pics[0]
            if len(pics) == 1
            else vis.side_by_side(pics[0], pics[1], ("ground truth", "prediction"))
        )
        pic = vis.titled(vis.with_legend(pic, labels, notes), title)
        path = out / f"{sample.token}_{step}.png"
        cv2.imwrite(str(path), pic)
        log.info("wrote %s", path)
        written.append(path)
    return written


def picture_title(token: str, stamp_ns: int, miou: float | None) -> str:
    """Title of a keyframe's pictures: token, stamp in s (ROS sec.nanosec) and the frame mIoU."""
    title = f"{token}   stamp {stamp_ns // 10**9}.{stamp_ns % 10**9:09d} s"
    if miou is not None:
        title += f"   mIoU {100 * miou:.1f} % (this frame, Occ3D classes 0-16, camera mask)"
    return title


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    handlers = {"generate": _generate, "evaluate": _evaluate, "check": _check, "render": _render}
    try:
        handlers[args.command](args)
    except (
        UsageError,
        DatasetError,
        SourceError,
        ConfigError,
        CheckError,
        FileExistsError,
    ) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except OSError as err:
        sys.stderr.write(f"error: {err.strerror or err}: {err.filename or ''}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
