"""Export FlashOCC to the ONNX graphs the onnxruntime backend runs (single-frame or M2).
In: --model-config, --weights, --out DIR. Out: DIR/{image_to_depth,bev_to_logits}.onnx + metadata
(4D-stereo configs also DIR/stereo_feature.onnx).

`python -m flashocc_ros.tools.export --model-config demo --weights W.safetensors --out DIR`.
Weights follow the node's `weights` parameter ("" = shipped demo weights, "random" = seeded
random). After the export the graphs are checked against TensorRT 10's operator support
(`flashocc_ros.deploy.trt_ops`); findings are logged, and `--strict-trt` turns them into exit 1.
User mistakes end in one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from flashocc_ros.config import ConfigError

LOG = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-export", description=__doc__)
    parser.add_argument("--model-config", default="demo", help="preset name or model YAML")
    parser.add_argument("--weights", default="", help='weights file, "" (demo) or "random"')
    parser.add_argument("--out", type=Path, required=True, help="export folder")
    parser.add_argument(
        "--strict-trt", action="store_true", help="exit 1 when the TensorRT op check finds issues"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.deploy.onnx_export import ExportError, check_exportable, export_onnx
    from flashocc_ros.deploy.trt_ops import check_trt_compat
    from flashocc_ros.model.flashocc import FlashOCC
    from flashocc_ros.runtime.factory import load_model

    try:
        cfg, model = load_model(args.model_config, args.weights)
        check_exportable(cfg)
        if not isinstance(model, FlashOCC):
            raise ConfigError(f"cannot export a {type(model).__name__}")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a folder")
        t0 = time.perf_counter()
        meta = export_onnx(model, cfg, args.out)
    except (ConfigError, ExportError, OSError) as err:
        LOG.error("flashocc-export: %s", err)
        return 2
    LOG.info("exported %s in %.1f s -> %s", cfg.name, time.perf_counter() - t0, args.out)
    violations = 0
    for spec in meta.graphs():
        found = check_trt_compat(args.out / spec.file)
        violations += len(found)
        LOG.info(
            "%s: %s -> %s; TensorRT 10 op check: %d issue(s)",
            spec.file,
            spec.inputs,
            spec.outputs,
            len(found),
        )
        for v in found:
            LOG.warning("  %s", v)
    return 1 if violations and args.strict_trt else 0


if __name__ == "__main__":
    sys.exit(main())
