"""The offline replay tool runs any backend through the node's pipeline: M2 (tiny-stereo) on
onnxruntime over a real bag gives the labels PyTorch gives, with its history kept.
In: a generated 4-keyframe bag, a tiny-stereo export on a small grid. Out: assertions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from flashocc_ros.node_config import node_config_from_mapping, parse_param_items
from flashocc_ros.runtime.factory import create_pipeline
from flashocc_ros.tools import export, replay
from flashocc_ros.tools.replay import OfflineReplay
from flashocc_ros.tools.world import main as world_main

KEYFRAMES = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(bag, model config YAML, export folder) shared by the tests of this file."""
    root = tmp_path_factory.mktemp("replay")
    bag = root / "bag"
    size = ["--width", "352", "--height", "198", "--mask-width", "16"]
    args = ["generate", "--bag", str(bag), "--scenes", "1", "--keyframes", str(KEYFRAMES),
            "--keyframes-only", *size]  # fmt: skip
    assert world_main(args) == 0
    cfg = root / "tiny_stereo_small.yaml"
    small = {"x_min": -12.8, "x_max": 12.8, "y_min": -12.8, "y_max": 12.8}
    cfg.write_text(yaml.safe_dump({"base": "tiny-stereo", "grid": small}))
    out = root / "export"
    cmd = ["--model-config", str(cfg), "--weights", "random", "--out", str(out)]
    assert export.main(cmd) == 0
    return bag, cfg, out


def _labels(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            found[path.stem] = z["semantics"]
    return found


def test_m2_on_onnxruntime_replays_like_torch(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bag, cfg, export_dir = setup
    common = [str(bag), "--model-config", str(cfg), "--weights", "random"]
    assert replay.main([*common, "--out", str(tmp_path / "torch")]) == 0
    ort = ["--param", "backend=onnxruntime", "--param", f"engine_path={export_dir}"]
    assert replay.main([*common, "--out", str(tmp_path / "ort"), *ort]) == 0
    torch_labels, ort_labels = _labels(tmp_path / "torch"), _labels(tmp_path / "ort")
    assert len(torch_labels) == KEYFRAMES and torch_labels.keys() == ort_labels.keys()
    for stamp, want in torch_labels.items():
        assert (ort_labels[stamp] == want).mean() >= 0.999, stamp
    # The same pipeline as a library: every bundle after the first ran against a history.
    params = node_config_from_mapping(
        {"model_config": str(cfg), "weights": "random", **parse_param_items(ort[1::2])}
    )
    pipeline = create_pipeline(params)
    assert pipeline.backend.name.startswith("onnxruntime")
    results = list(OfflineReplay(params, pipeline).run(bag))
    assert len(results) == KEYFRAMES and pipeline.history_resets == {}
    history = getattr(pipeline.backend, "history", None)
    assert history is not None and len(history.frames) == KEYFRAMES


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["backend=onnxruntime"], "engine_path"),
        (["no_such_parameter=1"], "unknown parameters"),
        (["backend"], "expected KEY=VALUE"),
    ],
)
def test_replay_mistakes_end_in_one_line(
    setup: tuple[Path, Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    params: list[str],
    message: str,
) -> None:
    bag, cfg, _ = setup
    args = [str(bag), "--out", str(tmp_path), "--model-config", str(cfg), "--weights", "random"]
    with caplog.at_level(logging.ERROR):
        assert replay.main([*args, *(f"--param={p}" for p in params)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0], errors
