"""Growing trained weights: the grown model computes exactly what the source computed (eval mode,
non-trivial BatchNorm statistics), its new capacity gets gradients from the first step, targets
that are not a supported growth are refused, and the CLI writes loadable grown weights.
In: the `tiny` and `tiny-stereo` configs on a small grid (random weights). Out: assertions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tiny_config import SMALL_GRID, TINY, randomize_bn

from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.model.checkpoint import load_flashocc, save_flashocc
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.tools.grow import main
from flashocc_ros.train.grow import GrowError, check_growth, grow_model

TINY_STEREO = model_config("tiny-stereo").replace(grid=SMALL_GRID)
WIDE = TINY.replace(
    context_channels=12, bev_num_layers=(2, 1, 3), bev_neck_channels=24, head_channels=20
)
WIDE_STEREO = TINY_STEREO.replace(bev_num_layers=(1, 2, 1), bev_neck_channels=24, head_channels=24)


def _trained_like(cfg: ModelConfig, seed: int) -> FlashOCC:
    torch.manual_seed(seed)
    model = build_model(cfg)
    randomize_bn(model, seed)
    return model.eval()


def _inputs(cfg: ModelConfig) -> tuple[torch.Tensor, object]:
    gen = torch.Generator().manual_seed(7)
    imgs = torch.randn(1, cfg.num_cameras, 3, *cfg.input_size, generator=gen)
    return imgs, rig_calibration(nuscenes_like_rig(), cfg.input_size)


@pytest.mark.parametrize(
    ("old", "new"), [(TINY, WIDE), (TINY_STEREO, WIDE_STEREO)], ids=["tiny", "tiny-stereo"]
)
def test_grown_model_computes_the_same_logits(old: ModelConfig, new: ModelConfig) -> None:
    model = _trained_like(old, 1)
    grown = grow_model(model, old, new)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())
    imgs, calib = _inputs(old)
    with torch.no_grad():
        want = model(imgs, calib)
        assert want.abs().max() > 0.1  # not a degenerate all-zero comparison
        torch.testing.assert_close(grown(imgs, calib), want, atol=1e-5, rtol=1e-5)


def test_new_capacity_gets_gradients_from_the_first_step() -> None:
    grown = grow_model(_trained_like(TINY, 2), TINY, WIDE).train()
    imgs, calib = _inputs(TINY)
    grown(imgs, calib).square().mean().backward()
    reads_new = {  # weights whose columns for the new channels start at zero
        "img_bev_encoder_backbone.layers.0.0.conv1.weight": TINY.context_channels,
        "img_bev_encoder_neck.up2.1.weight": 2 * TINY.bev_neck_channels,
        "occ_head.final_conv.conv.weight": TINY.bev_neck_channels,
        "occ_head.predicter.2.weight": 2 * TINY.head_channels,
    }
    params = dict(grown.named_parameters())
    for name, first_new in reads_new.items():
        assert (params[name][:, first_new:] == 0).all(), name
        grad = params[name].grad
        assert grad is not None and grad[:, first_new:].abs().sum() > 0, name
    new_block = grown.img_bev_encoder_backbone.layers[2][2]  # stage 2 went from 1 to 3 blocks
    assert new_block.bn2.weight.grad is not None and new_block.bn2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (TINY, TINY.replace(head_channels=8), "head_channels would shrink"),
        (WIDE, WIDE.replace(bev_num_layers=(1, 1, 3)), "bev_num_layers can only add"),
        (TINY, WIDE.replace(input_size=(128, 352)), "also changes input_size"),
        (TINY_STEREO, TINY_STEREO.replace(context_channels=16), "single-frame LSS"),
    ],
    ids=["shrink", "fewer-blocks", "other-field", "temporal-context"],
)
def test_unsupported_targets_are_refused(old: ModelConfig, new: ModelConfig, match: str) -> None:
    with pytest.raises(GrowError, match=match):
        check_growth(old, new)


def test_cli_writes_grown_weights_and_refuses_bad_targets(tmp_path: Path) -> None:
    source = tmp_path / "w.safetensors"
    save_flashocc(_trained_like(TINY, 3), TINY, source)
    target = tmp_path / "wide.yaml"
    grid = {k: getattr(SMALL_GRID, k) for k in ("x_min", "x_max", "y_min", "y_max")}
    target.write_text(
        yaml.safe_dump({"base": "tiny", "grid": grid, "context_channels": 12, "head_channels": 24})
    )
    out = tmp_path / "grown.safetensors"
    assert main(["--weights", str(source), "--to", str(target), "--out", str(out)]) == 0
    grown, cfg = load_flashocc(out)
    assert (cfg.context_channels, cfg.head_channels) == (12, 24)
    model, _ = load_flashocc(source)
    imgs, calib = _inputs(TINY)
    with torch.no_grad():
        torch.testing.assert_close(grown(imgs, calib), model(imgs, calib), atol=1e-5, rtol=1e-5)
    bad = tmp_path / "bad.safetensors"
    assert main(["--weights", str(source), "--to", "demo", "--out", str(bad)]) == 2
    assert not bad.exists()
    assert (
        main(["--weights", str(tmp_path / "none.safetensors"), "--to", "tiny", "--out", str(bad)])
        == 2
    )
