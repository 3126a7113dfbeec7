"""Shared fixtures of the deployment tests: export metadata without exporting, and a small
synthetic bag to calibrate on. Importable from every test folder (test/ is on sys.path).
"""

from __future__ import annotations

from pathlib import Path

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.onnx_export import (
    ExportMetadata,
    GraphSpec,
    graph_shapes,
    stereo_feature_shapes,
)
from flashocc_ros.tools.world import main as world_main

WEIGHTS = "ab" * 32


def fake_export(cfg: ModelConfig, weights: str = WEIGHTS) -> ExportMetadata:
    """Export metadata of `cfg` with made-up hashes (4D-stereo configs: with graph S)."""
    a, b = graph_shapes(cfg)
    stereo = None
    if cfg.stereo:
        s = stereo_feature_shapes(cfg)
        stereo = GraphSpec(s.file, "c" * 64, s.inputs, s.outputs)
    return ExportMetadata(
        model_config=cfg.to_dict(),
        weights_sha256=weights,
        opset=17,
        torch_version="t",
        onnx_version="o",
        image_graph=GraphSpec(a.file, "a" * 64, a.inputs, a.outputs),
        bev_graph=GraphSpec(b.file, "b" * 64, b.inputs, b.outputs),
        stereo_graph=stereo,
    )


def calibration_bag(folder: Path) -> Path:
    """A one-scene, three-keyframe 352x198 bag in `folder`/bag."""
    out = folder / "bag"
    args = ["generate", "--bag", str(out), "--scenes", "1", "--keyframes", "3", "--width", "352",
            "--height", "198", "--keyframes-only", "--mask-width", "16"]  # fmt: skip
    assert world_main(args) == 0
    return out
