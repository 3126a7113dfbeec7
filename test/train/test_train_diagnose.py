"""Diagnosis: its model pass equals the evaluator, the depth oracle replaces exactly the cells
with a target, depth accuracy counts by hand, perfect depth helps a depth-blind model, a one-voxel
slip costs what counting by hand says, and the CLI reports or refuses cleanly.
In: the tiny generated dataset with depth maps, the `tiny` config (random weights). Out: asserts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_config import input_sensitive
from torch import Tensor

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import model_config
from flashocc_ros.eval.metrics import MiouMetric
from flashocc_ros.model.checkpoint import save_flashocc
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import depth_values
from flashocc_ros.tools.diagnose import main
from flashocc_ros.train.data import OccupancyDataset
from flashocc_ros.train.diagnose import (
    class_table,
    depth_accuracy,
    diagnose,
    oracle_depth,
    shift_one_voxel,
)
from flashocc_ros.train.losses import NO_DEPTH, depth_targets
from flashocc_ros.train.trainer import evaluate


def test_oracle_replaces_only_cells_with_a_target() -> None:
    probs = torch.rand(1, 2, 5, 3, 4).softmax(dim=2)
    target = torch.full((1, 2, 3, 4), NO_DEPTH, dtype=torch.int64)
    target[0, 0, 1, 2] = 3
    target[0, 1, 0, 0] = 0
    out = oracle_depth(probs, target)
    assert out[0, 0, :, 1, 2].tolist() == [0, 0, 0, 1, 0]
    assert out[0, 1, :, 0, 0].tolist() == [1, 0, 0, 0, 0]
    keep = (target == NO_DEPTH).unsqueeze(2).expand_as(probs)
    torch.testing.assert_close(out[keep], probs[keep], rtol=0, atol=0)


def test_depth_accuracy_counts_exact_and_neighbour_bins() -> None:
    probs = torch.zeros(1, 1, 6, 1, 4)
    for cell, top in enumerate((2, 3, 5, 0)):
        probs[0, 0, top, 0, cell] = 1.0
    target = torch.tensor([[[[2, 2, 2, NO_DEPTH]]]])  # exact, one off, three off, none
    acc = depth_accuracy(probs, target)
    assert (acc.cells, acc.exact, acc.within_one) == (3, 1, 2)
    assert "33.3 %" in acc.line() and "66.7 %" in acc.line()


def test_one_voxel_slip_costs_a_thin_object_everything_and_a_thick_one_two_thirds() -> None:
    free = FREE_LABEL
    gt = np.full((8, 4, 2), free, dtype=np.uint8)
    gt[1] = 0  # one voxel thick in x
    gt[3:5] = 1  # two voxels thick in x
    mask = np.ones(gt.shape, dtype=bool)
    along_x = shift_one_voxel(gt, 0, free)
    assert (along_x[0] == free).all() and (along_x[2] == 0).all() and (along_x[4:6] == 1).all()
    metric = MiouMetric()
    metric.add(along_x, gt, mask)
    iou = metric.result().iou
    assert iou[0] == 0.0
    assert iou[1] == pytest.approx(1 / 3)  # 1 voxel kept, 1 missed, 1 extra per (y, z)
    metric = MiouMetric()
    metric.add(shift_one_voxel(gt, 1, free), gt, mask)  # along y: only the edge row y=0 is lost
    along_y = metric.result()
    assert along_y.iou[0] == pytest.approx(3 / 4)
    table = class_table({"a %": along_y, "b %": along_y}, CLASS_NAMES)
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["class", "a", "%", "b", "%"]
    assert rows[2:4] == [["others", "75.00", "75.00"], ["barrier", "75.00", "75.00"]]
    assert rows[-1] == ["mIoU", "(0-16)", "75.00", "75.00"]  # absent classes left out


def _depth_sensitive_net(seed: int) -> FlashOCC:
    """A random `tiny` model whose labels depend on its depth (`input_sensitive`)."""
    torch.manual_seed(seed)
    net = build_model(model_config("tiny"))
    input_sensitive(net)
    return net


def test_both_passes_equal_the_evaluator_with_and_without_true_depth(
    tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _depth_sensitive_net(3)
    cfg = net.cfg
    data = OccupancyDataset(tiny_data, cfg, train=False, with_depth=True)
    res = diagnose(net, data)
    assert res.depth is not None and res.oracle is not None
    assert res.depth.cells > 100
    assert res.oracle.num_frames == res.model.num_frames == len(data)
    assert res.shifted.num_frames == 2 * len(data)  # one slip along x, one along y per frame
    assert 0.5 < res.shifted.iou[-1] < 1.0  # free space survives a slip, but not entirely
    np.testing.assert_array_equal(
        res.model.confusion, evaluate(net, data, torch.device("cpu")).confusion
    )

    # reference for the oracle: the whole forward pass with the depth net's output patched
    bins = depth_values(cfg)
    targets = iter(
        [depth_targets(data[i]["depth"][None], bins, cfg.downsample) for i in range(len(data))]
    )
    vt = net.img_view_transformer
    plain = vt.depth_context

    def with_true_depth(*args: Any) -> tuple[Tensor, Tensor]:
        probs, context = plain(*args)
        return oracle_depth(probs, next(targets)), context

    monkeypatch.setattr(vt, "depth_context", with_true_depth)
    ref = evaluate(net, data, torch.device("cpu"))
    assert next(targets, None) is None
    np.testing.assert_array_equal(res.oracle.confusion, ref.confusion)
    assert not np.array_equal(res.oracle.confusion, res.model.confusion)  # depth mattered


def test_cli_reports_and_refuses(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = model_config("tiny")
    torch.manual_seed(4)
    weights = tmp_path / "w.safetensors"
    save_flashocc(build_model(cfg), cfg, weights)
    assert main(["--weights", str(weights), "--data", str(tiny_data), "--frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 keyframes" in out and "prec %" in out and "mIoU by distance" in out
    assert "within one bin" in out and "true depth %" in out and "one voxel off %" in out

    stereo = model_config("tiny-stereo")
    save_flashocc(build_model(stereo), stereo, tmp_path / "s.safetensors")
    assert main(["--weights", str(tmp_path / "s.safetensors"), "--data", str(tiny_data)]) == 2
    assert "single-frame" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "none.safetensors"), "--data", str(tiny_data)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--weights", str(weights), "--data", str(tmp_path / "nodata")]) == 2
    assert "error:" in capsys.readouterr().err
