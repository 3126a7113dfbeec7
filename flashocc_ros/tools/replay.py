"""Offline replay: a recording through the node's own front end and pipeline, without ROS.
In: a rosbag2 and the node's settings (parameter file, cameras file, remaps). Out: npz per grid.

    python -m flashocc_ros.tools.replay BAG --out DIR [--params-file my.param.yaml]
        [--cameras cameras.yaml] [--remap ~/input/cam_front/image:=/my/front/image_raw ...]
        [--param KEY=VALUE ...]

The settings are read exactly as the node reads them (the same parameter names, the same remap
syntax as `--ros-args -r`), so the grids equal the node's for the same recording. Writes
`<out>/<stamp_ns>.npz` per grid (format: `runtime.grid_file`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from flashocc_ros.camera_topics import apply_remaps, default_camera_topics, load_camera_topics
from flashocc_ros.config import ConfigError
from flashocc_ros.node_config import (
    node_config_from_mapping,
    params_from_ros_file,
    parse_param_items,
)
from flashocc_ros.runtime.bag_replay import OfflineReplay, RecordingError, ReplayStats
from flashocc_ros.runtime.grid_file import grid_path, result_arrays, write_grid
from flashocc_ros.safe_io import OutputExistsError, disk_error_line

__all__ = ["OfflineReplay", "ReplayStats", "main"]
LOG = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashocc-replay",
        description="Run a recording through the flashocc node's pipeline without ROS.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap / .db3 file")
    parser.add_argument("--out", type=Path, required=True, help="folder for <stamp_ns>.npz")
    parser.add_argument("--params-file", type=Path, help="the node's ROS 2 parameter file")
    parser.add_argument(
        "--cameras", type=Path, help="cameras YAML: each camera's image and camera_info topic"
    )
    parser.add_argument(
        "-r",
        "--remap",
        action="append",
        default=[],
        metavar="FROM:=TO",
        help="a node input remap as for --ros-args -r, e.g. ~/input/cam_front/image:=/front/image",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a node parameter (after --params-file), e.g. backend=onnxruntime",
    )
    parser.add_argument("--model-config", help="shortcut for --param model_config=...")
    parser.add_argument("--weights", help="shortcut for --param weights=...")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace .npz files already in --out"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(NodeConfig, camera topics) from the parameter file, shortcuts, --param, cameras file and
    remaps, in that order of precedence (later wins). ConfigError on any mistake."""
    values: dict[str, Any] = {}
    if args.params_file is not None:
        values.update(params_from_ros_file(args.params_file))
    if args.model_config is not None:
        values["model_config"] = args.model_config
    if args.weights is not None:
        values["weights"] = args.weights
    values.update(parse_param_items(args.param))
    topics = None
    if args.cameras is not None:
        topics = load_camera_topics(args.cameras)
        names = [t.name for t in topics]
        given = values.get("camera_names")
        if given is not None and list(given) != names:
            raise ConfigError(
                f"--cameras {args.cameras} names {names} but the parameters say camera_names "
                f"{list(given)}"
            )
        values["camera_names"] = names
        values["compressed_cameras"] = [t.name for t in topics if t.compressed]
    params = node_config_from_mapping(values)
    if topics is None:
        topics = default_camera_topics(params.camera_names, params.compressed_cameras)
    if args.remap:
        topics = apply_remaps(topics, args.remap)
    return params, topics


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.runtime.backend import BackendError
    from flashocc_ros.runtime.factory import create_pipeline

    try:
        params, topics = settings(args)
        if not args.bag.exists():
            raise ConfigError(f"recording not found: {args.bag}")
        old = sorted(args.out.glob("*.npz")) if args.out.is_dir() and not args.overwrite else []
        if old:
            raise OutputExistsError(
                f"--out {args.out} already holds {len(old)} .npz files (e.g. {old[0].name}); "
                "pass --overwrite to replace them, or choose another --out"
            )
        pipeline = create_pipeline(params)
    except (ConfigError, BackendError, OSError) as err:
        LOG.error("flashocc-replay: %s", err)
        return 2
    explicit = args.cameras is not None or bool(args.remap)
    replay = OfflineReplay(params, pipeline, topics, explicit_topics=explicit)
    t0 = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        LOG.error("flashocc-replay: %s", disk_error_line(err, args.out))
        return 1
    written = 0
    try:
        with _progress(args.bag, args.quiet) as bar:
            for result in replay.run(args.bag, progress=bar):
                target = grid_path(args.out, result.stamp_ns)
                try:  # the whole file or none (atomic)
                    write_grid(target, result_arrays(result))
                except OSError as err:
                    LOG.error(
                        "flashocc-replay: %s; the %d grids written before it are complete",
                        disk_error_line(err, target),
                        written,
                    )
                    return 1
                written += 1
    except RecordingError as err:
        LOG.error("flashocc-replay: %s", err)
        return 1
    stats = replay.stats
    LOG.info(
        "%d grids from %d messages in %.1f s -> %s (dropped: %s)",
        stats.bundles,
        stats.messages,
        time.perf_counter() - t0,
        args.out,
        stats.failures or "none",
    )
    if stats.bundles == 0:
        fe = replay.frontend
        sync = fe.sync.stats() if fe is not None else None
        why = (
            f"{sync.frames_received} camera frames, bundles missing a camera: "
            f"{dict(sync.missing) or 'none'}"
            if sync is not None
            else "nothing read"
        )
        LOG.error(
            "flashocc-replay: no grid from %s (%s); topics used: %s",
            args.bag,
            why,
            ", ".join(t for c in topics for t in (c.image, c.camera_info)),
        )
        return 1
    return 0


class _progress:  # noqa: N801 - used like a function in a with statement
    """Progress over the recording's messages: a bar on a terminal, else a line per 10 %."""

    def __init__(self, bag: Path, quiet: bool) -> None:
        self.bag, self.quiet = bag, quiet
        self.bar: Any = None
        self.tenth = 0

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(unit=" msg", desc=self.bag.name, leave=False)
        return self._update

    def _update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            if done % 20 == 0 or done == total:
                self.bar.refresh()
            return
        tenth = 10 * done // max(total, 1)
        if tenth > self.tenth:
            self.tenth = tenth
            LOG.info("%s: %d %% (%d of %d messages)", self.bag.name, 10 * tenth, done, total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
