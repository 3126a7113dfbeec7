"""Build the TensorRT engines the `tensorrt` backend runs (export first when needed).
In: --model-config, --weights, --precision, --out DIR [--calib-bag BAG]. Out: DIR (engine folder).

`python -m flashocc_ros.tools.build_engine --model-config demo --precision fp16 --out engines/demo`
INT8 calibrates on bundles of a rosbag2 read through the node's own preprocessing
(`--calib-bag BAG`, the same topics the replay tool reads) or reuses valid calibration caches
in DIR/calib. 4D-stereo configs (M2, tiny-stereo) build three engines (graph S too); their
INT8 calibration records the inputs of consecutive bag frames through the node's pipeline and
TemporalHistory (the bag needs /tf odom -> base_link). Engines that already match the model,
precision, TensorRT version, GPU and the export's ONNX graphs (and, for int8 with --calib-bag,
were calibrated on that bag) are kept unless `--force`; a calibration cache is reused only for
the same graph and the same calibration frames, so `--force` with a new bag recalibrates, and
the engine metadata names the bag and frames (sha256) its scales came from. Progress is logged
per build phase. User mistakes (unknown config, a temporal config without engines, missing
weights or bag, int8 without calibration data, a malformed calibration cache, no CUDA, no
TensorRT 10.x) end in one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from flashocc_ros.config import ConfigError

LOG = logging.getLogger(__name__)
#: Default INT8 calibration bundles; 4D-stereo records ~155 MB of graph inputs per bundle (R50).
CALIB_FRAMES = 64
TEMPORAL_CALIB_FRAMES = 24


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flashocc-build-engine", description=__doc__)
    p.add_argument("--model-config", default="demo", help="preset name or model YAML")
    p.add_argument("--weights", default="", help='weights file, "" (demo) or "random"')
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    p.add_argument("--out", type=Path, required=True, help="engine folder")
    p.add_argument("--device", default="cuda", help="CUDA device to build for (cuda, cuda:N)")
    p.add_argument("--calib-bag", type=Path, help="int8: rosbag2 with camera images + /tf")
    p.add_argument(
        "--calib-frames",
        type=int,
        default=None,
        help="int8: bundles used (default 64; 4D-stereo 24: ~155 MB of host memory each for R50)",
    )
    p.add_argument("--calib-stride", type=int, default=1, help="int8: use every k-th bundle")
    p.add_argument("--compressed", action="store_true", help="int8 bag: jpeg/png cameras")
    p.add_argument(
        "--timing-cache", type=Path, help="timing cache file (default DIR/timing.cache)"
    )
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace (4 GiB)")
    p.add_argument("--force", action="store_true", help="rebuild even when the engines match")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.deploy.calibration import (
        CalibrationError,
        gather_calibration_frames,
        gather_temporal_calibration,
    )
    from flashocc_ros.deploy.engine_meta import (
        EngineError,
        EngineLayout,
        Expected,
        calibrated_elsewhere,
        check_engine_config,
        check_engines,
        cuda_platform,
    )
    from flashocc_ros.deploy.onnx_export import ExportError, is_stereo_4d, weights_sha256
    from flashocc_ros.deploy.trt_build import build_engines, int8_rebuild_blocker, load_tensorrt
    from flashocc_ros.model.flashocc import FlashOCC
    from flashocc_ros.node_config import node_config_from_mapping
    from flashocc_ros.runtime.factory import load_model

    try:
        if (args.calib_frames is not None and args.calib_frames < 1) or args.calib_stride < 1:
            raise ConfigError("--calib-frames and --calib-stride must be >= 1")
        if args.calib_bag is not None and not args.calib_bag.exists():
            raise ConfigError(f"--calib-bag {args.calib_bag} not found")
        if args.calib_bag is not None and args.precision != "int8":
            raise ConfigError("--calib-bag is for --precision int8 only")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a folder")
        cfg, model = load_model(args.model_config, args.weights)
        check_engine_config(cfg)
        calib_frames = args.calib_frames or (
            TEMPORAL_CALIB_FRAMES if is_stereo_4d(cfg) else CALIB_FRAMES
        )
        if not isinstance(model, FlashOCC):
            raise ConfigError(f"cannot build engines for a {type(model).__name__}")
        layout = EngineLayout(args.out, args.precision)
        weights_hash = weights_sha256(model)
        if args.precision == "int8" and args.calib_bag is None:
            blocker = int8_rebuild_blocker(layout, cfg, weights_hash)
            if blocker:
                raise ConfigError(f"--precision int8 needs --calib-bag BAG ({blocker})")
        version = load_tensorrt()
        platform = cuda_platform(version, args.device)
        reasons = check_engines(layout, Expected(cfg, weights_hash, args.precision, platform))
        bag = "" if args.calib_bag is None else str(args.calib_bag.resolve())
        if bag and not reasons:
            reasons = calibrated_elsewhere(layout, cfg, bag)
        if not reasons and not args.force:
            LOG.info("engines in %s are up to date (%s); --force rebuilds", args.out, platform)
            return 0
        frames = batches = None
        if args.calib_bag is not None:
            params = node_config_from_mapping(
                {"model_config": args.model_config, "weights": args.weights}
            ).replace(camera_names=cfg.camera_names)
            if args.compressed:
                params = params.replace(compressed_cameras=params.camera_names)
            if is_stereo_4d(cfg):  # consecutive frames through the history, on the device
                batches = gather_temporal_calibration(
                    args.calib_bag,
                    params,
                    cfg,
                    model,
                    calib_frames,
                    args.calib_stride,
                    args.device,
                )
            else:
                frames = gather_calibration_frames(
                    args.calib_bag, params, cfg, calib_frames, args.calib_stride
                )
        t0 = time.perf_counter()
        metas = build_engines(
            model,
            cfg,
            layout,
            calib_frames=frames,
            calib_batches=batches,
            calib_source=bag,
            timing_cache=args.timing_cache,
            workspace_gib=args.workspace_gib,
            device=args.device,
        )
    except (ConfigError, ExportError, EngineError, CalibrationError, OSError) as err:
        LOG.error("flashocc-build-engine: %s", err)
        return 2
    for meta in metas:
        LOG.info("%s %s: %s -> %s", meta.graph, meta.precision, meta.inputs, meta.outputs)
    LOG.info(
        "built %s engines in %.0f s -> %s", args.precision, time.perf_counter() - t0, args.out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
