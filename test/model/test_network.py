"""FlashOCC assembly on tiny configs: shapes, stage composition, gradients, BN eval semantics."""

from __future__ import annotations

import pytest
import torch
from tiny_flashocc import TINY, TINY_STEREO, images, randomize_bn, rig_calib

from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.model.backbone import ResNet
from flashocc_ros.model.bev_pool import bev_pool_reference
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration

torch.set_num_threads(2)

#: Stride-8 features (neck over stages 1..3), as the demo model.
TINY_S8 = TINY.replace(downsample=8, backbone_out_indices=(1, 2, 3))


def eval_model(cfg: ModelConfig, seed: int = 0) -> FlashOCC:
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    randomize_bn(model, seed)
    return model


@pytest.mark.parametrize("cfg", [TINY, TINY_STEREO], ids=["tiny", "tiny-stereo"])
def test_forward_shapes_and_predict(cfg: ModelConfig) -> None:
    model = eval_model(cfg)
    imgs, calib = images(cfg), rig_calib(cfg)
    with torch.no_grad():
        logits = model(imgs, calib)
    x, y, z = cfg.grid.shape
    assert logits.shape == (1, x, y, z, cfg.num_classes) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    labels = model.predict(imgs, calib)
    assert labels.dtype == torch.uint8 and labels.shape == (1, x, y, z)
    assert torch.equal(labels, logits.argmax(-1).to(torch.uint8))


@pytest.mark.parametrize("cfg", [TINY, TINY_S8], ids=["stride16", "stride8"])
def test_stages_compose_to_forward_and_lift_matches_reference_pooling(cfg: ModelConfig) -> None:
    model = eval_model(cfg)
    imgs, calib = images(cfg), rig_calib(cfg)
    with torch.no_grad():
        feats = model.encode_images(imgs)
        fh, fw = cfg.feature_size
        assert feats.feat.shape == (1, 6, cfg.neck_channels, fh, fw) and feats.stereo is None
        bev = model.lift(feats, calib)
        assert bev.shape == (1, cfg.context_channels, 64, 64) and bev.abs().sum() > 0
        torch.testing.assert_close(model.bev_to_logits(bev), model(imgs, calib))
        depth, context = model.depth_context(feats, calib)
        torch.testing.assert_close(depth.sum(dim=2), torch.ones(1, 6, fh, fw))
        vt = model.img_view_transformer
        ref = bev_pool_reference(
            depth, context.permute(0, 1, 3, 4, 2), vt.geometry.coords(calib), cfg.grid
        )
        torch.testing.assert_close(bev, ref, rtol=1e-5, atol=1e-5)


def test_depth_logits_come_first_and_context_is_raw() -> None:
    model = eval_model(TINY)
    vt = model.img_view_transformer
    feat = torch.randn(1, 6, TINY.neck_channels, *TINY.feature_size)
    with torch.no_grad():
        raw = vt.depth_net(feat.flatten(0, 1))
        depth, context = vt.depth_context(feat, rig_calib(TINY))
    d = TINY.num_depth_bins
    torch.testing.assert_close(depth.flatten(0, 1), raw[:, :d].softmax(1))
    torch.testing.assert_close(context.flatten(0, 1), raw[:, d:])


@pytest.mark.parametrize("cfg", [TINY, TINY_STEREO], ids=["tiny", "tiny-stereo"])
def test_every_parameter_receives_a_gradient(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    logits = model(images(cfg), rig_calib(cfg))
    (logits.square().mean()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_eval_mode_batch_items_are_independent() -> None:
    """BatchNorm uses running statistics in eval: a batch of two equals two single runs."""
    model = eval_model(TINY)
    one = rig_calib(TINY)
    two = Calibration(*(torch.cat([t, t]) for t in one.tensors()))
    imgs = torch.cat([images(TINY, 1), images(TINY, 2)])
    with torch.no_grad():
        both = model(imgs, two)
        torch.testing.assert_close(both[1:], model(imgs[1:], one), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_runs_and_stays_close() -> None:
    model = eval_model(TINY)
    imgs, calib = images(TINY), rig_calib(TINY)
    with torch.no_grad():
        ref = model(imgs, calib)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(imgs, calib).float()
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max() + 0.1


def test_input_shape_errors_name_the_axis() -> None:
    model = eval_model(TINY)
    calib = rig_calib(TINY)
    with pytest.raises(ValueError, match="N:"):
        model(images(TINY)[:, :5], calib)
    with pytest.raises(ValueError, match="H, W"):
        model(torch.zeros(1, 6, 3, 32, 176), calib)
    with pytest.raises(ValueError, match=r"\(B, N, 3, H, W\)"):
        model(torch.zeros(6, 3, *TINY.input_size), calib)


def test_resnet50_is_v1_5_with_torchvision_layout() -> None:
    with torch.device("meta"):
        net = ResNet(50, (0, 1, 2, 3))
    assert net.out_channels == (256, 512, 1024, 2048)
    assert net.layer2[0].conv1.stride == (1, 1) and net.layer2[0].conv2.stride == (2, 2)
    assert net.layer1[0].downsample is not None and net.layer2[1].downsample is None
    outs = net(torch.empty(2, 3, 256, 704, device="meta"))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (256, 64, 176),
        (512, 32, 88),
        (1024, 16, 44),
        (2048, 8, 22),
    ]


def test_presets_build_with_expected_sub_modules() -> None:
    with torch.device("meta"):
        m1 = FlashOCC(model_config("flashocc-r50"))
        m2 = FlashOCC(model_config("flashocc-r50-4d-stereo"))
    assert isinstance(m1.img_view_transformer.depth_net, torch.nn.Conv2d)
    assert m1.pre_process_net is None and m2.pre_process_net is not None
    assert hasattr(m2.img_view_transformer.depth_net, "cost_volumn_net")
