"""The GPU self-check tool: its no-GPU behaviour (CPU) and a short real run (CUDA, marked gpu).
In: tiny config, random weights. Out: pass/fail; the CUDA test skips with the reason without one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_config import TINY

from flashocc_ros.tools import gpu_selfcheck
from flashocc_ros.tools.gpu_selfcheck import EXIT_NO_CUDA, Row, percentile, table

CUDA_MISSING = None if torch.cuda.is_available() else "no CUDA device visible to PyTorch"


def test_without_cuda_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    assert gpu_selfcheck.main(["--model-config", "tiny", "--out", str(out)]) == EXIT_NO_CUDA == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gpu_selfcheck: no CUDA device visible to PyTorch")
    assert lines[0].endswith("nothing to check (exit 3)")
    data = json.loads(out.read_text())
    assert data["cuda"] is False and data["rows"] == [] and "no CUDA" in data["reason"]


def test_table_and_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert math.isnan(percentile([], 99))
    rows = [
        Row("torch-cuda-fp32", "fp32", network_median=3.25, agreement=1.0, max_abs_diff=0.0),
        Row("tensorrt", "int8", status="skipped: TensorRT is not importable"),
    ]
    text = table(rows).splitlines()
    assert text[0].split()[:3] == ["backend", "prec", "net"]
    assert "3.25" in text[2] and "100.000" in text[2]
    assert text[3].endswith("skipped: TensorRT is not importable") and "nan" in text[3]


@pytest.mark.gpu
def test_selfcheck_runs_on_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    out = tmp_path / "check.json"
    args = ["--model-config", "tiny", "--weights", "random", "--frames", "3", "--out", str(out)]
    args += ["--work-dir", str(tmp_path / "work")]
    assert gpu_selfcheck.main(args) == 0
    data = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"]): r for r in data["rows"]}
    ref = data["rows"][0]
    assert ref["backend"].startswith("torch-cuda") and ref["agreement"] == 1.0
    fast = [
        r for (name, prec), r in rows.items() if name.startswith("torch-fast") and prec == "fp32"
    ]
    assert fast and fast[0]["agreement"] >= 0.999 and fast[0]["network_median"] > 0
    assert all(r["status"] == "ok" or r["status"].startswith("skipped") for r in data["rows"])
    assert "pipe med" in capsys.readouterr().out


def test_temporal_bundles_are_a_moving_sequence_with_poses() -> None:
    from stereo_sequence import CFG

    from flashocc_ros.runtime.backend import TorchBackend
    from flashocc_ros.runtime.pipeline import OccupancyPipeline
    from flashocc_ros.tools.gpu_selfcheck import (
        SEQUENCE_SPACING_NS,
        SEQUENCE_SPEED_MPS,
        LogitsTap,
        synthetic_bundles,
    )

    bundles = synthetic_bundles(CFG, 2)
    assert [b[0].stamp_ns for b in bundles] == [1_000_000_000, 1_000_000_000 + SEQUENCE_SPACING_NS]
    for cams in bundles:
        assert all(c.ego_pose is not None and c.ego_pose.shape == (4, 4) for c in cams)
    moved = np.linalg.norm(bundles[1][0].ego_pose[:2, 3] - bundles[0][0].ego_pose[:2, 3])
    assert abs(moved - SEQUENCE_SPEED_MPS * SEQUENCE_SPACING_NS / 1e9) < 1e-3
    assert bundles[0][1].ego_pose[0, 3] > bundles[0][0].ego_pose[0, 3]  # per-camera capture
    assert synthetic_bundles(TINY, 1)[0][0].ego_pose is None  # single-frame: no poses
    # The tap sees what the pipeline got, frame by frame, and the history stepped once each.
    torch.manual_seed(0)
    from flashocc_ros.model.flashocc import build_model

    backend = TorchBackend(build_model(CFG).eval(), CFG)
    tap = LogitsTap(backend)
    pipeline = OccupancyPipeline(CFG, tap)
    for cams in bundles:
        pipeline.process(cams)
    assert len(tap.logits) == 2 and tap.name == backend.name
    assert backend.history is not None and len(backend.history.frames) == 2


@pytest.mark.gpu
def test_selfcheck_runs_4d_stereo_on_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    out = tmp_path / "check.json"
    args = ["--model-config", "tiny-stereo", "--weights", "random", "--frames", "4"]
    args += ["--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert gpu_selfcheck.main(args) == 0
    data = json.loads(out.read_text())
    rows = {(r["backend"].split("-")[0], r["precision"]): r for r in data["rows"]}
    assert data["rows"][0]["agreement"] == 1.0
    for key in (("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8")):
        row = rows[key]
        assert row["status"] == "ok" or row["status"].startswith("skipped"), row
    fp32 = rows[("tensorrt", "fp32")]
    if fp32["status"] == "ok":
        assert fp32["agreement"] >= 0.999, fp32
    capsys.readouterr()
