"""State-dict keys, shapes, order and parameter counts against the official key lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.flashocc import FlashOCC

KEY_DIR = Path("/work/shared/docs/flashocc_keys")
if not KEY_DIR.is_dir():  # the repository copy, when the shared docs are not mounted
    KEY_DIR = Path(__file__).resolve().parents[2] / "docs" / "flashocc_keys"

CASES = [
    ("flashocc-r50-M0", "flashocc_r50_M0_keys.txt", 39_938_892),
    ("flashocc-r50", "flashocc_r50_keys.txt", 44_744_312),
    ("flashocc-r50-4d-stereo", "flashocc_r50_4d_stereo_keys.txt", 58_668_414),
]


def read_key_file(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """`name (d0,d1,...)` per line -> [(name, shape)]; `()` is a scalar."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, shape = line.split()
        out.append((name, tuple(int(v) for v in shape.strip("()").split(",") if v)))
    return out


def meta_model(preset: str) -> FlashOCC:
    with torch.device("meta"):
        return FlashOCC(model_config(preset))


@pytest.mark.parametrize(("preset", "key_file", "num_params"), CASES)
def test_state_dict_equals_official_key_list(preset: str, key_file: str, num_params: int) -> None:
    path = KEY_DIR / key_file
    if not path.is_file():
        pytest.skip(f"official key list {path} not available")
    model = meta_model(preset)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == read_key_file(path)  # names, shapes and order


@pytest.mark.parametrize(("preset", "key_file", "num_params"), CASES)
def test_parameter_count_matches_spec(preset: str, key_file: str, num_params: int) -> None:
    model = meta_model(preset)
    assert sum(p.numel() for p in model.parameters()) == num_params
    # num_batches_tracked are buffers, not parameters; no other persistent buffers exist.
    persistent = set(model.state_dict()) - {n for n, _ in model.named_parameters()}
    assert persistent and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in persistent
    )


def test_geometry_constants_are_not_in_the_state_dict() -> None:
    model = meta_model("flashocc-r50-4d-stereo")
    names = {n for n, _ in model.named_buffers()}
    assert "img_view_transformer.cv_frustum" in names
    assert not any("frustum" in k for k in model.state_dict())


@pytest.mark.parametrize(
    ("preset", "bev_in", "neck_out"),
    [
        ("flashocc-r50-M0", 64, 128),
        ("flashocc-r50", 64, 256),
        ("flashocc-r50-4d-stereo", 160, 256),
    ],
)
def test_stage_shapes_of_the_full_size_models(preset: str, bev_in: int, neck_out: int) -> None:
    """Spec §2.10 shape table, propagated on the meta device (no compute)."""
    model = meta_model(preset)
    cfg = model.cfg
    imgs = torch.empty(1, 6, 3, 256, 704, device="meta")
    feats = model.encode_images(imgs)
    assert feats.feat.shape == (1, 6, 256, 16, 44)
    if cfg.stereo:
        assert feats.stereo is not None and feats.stereo.shape == (1, 6, 256, 64, 176)
    else:
        assert feats.stereo is None
    stages = model.img_bev_encoder_backbone(torch.empty(1, bev_in, 200, 200, device="meta"))
    assert [tuple(s.shape[1:]) for s in stages] == [
        (c, 200 // 2 ** (i + 1), 200 // 2 ** (i + 1)) for i, c in enumerate(cfg.bev_channels)
    ]
    neck = model.img_bev_encoder_neck(stages)
    assert neck.shape == (1, neck_out, 200, 200)
    assert model.occ_head(neck).shape == (1, 200, 200, 16, 18)
