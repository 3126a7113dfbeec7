"""Checkpoint loading: official containers (mmcv, EMA, `module.`), safety, errors, our format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_keys import CASES, KEY_DIR, read_key_file
from tiny_flashocc import TINY, TINY_STEREO, images, rig_calib

from flashocc_ros.config import model_config
from flashocc_ros.model.checkpoint import (
    CheckpointError,
    check_state_dict,
    extract_state_dict,
    load_checkpoint_into,
    load_flashocc,
    load_state_dict_strict,
    read_checkpoint,
    save_flashocc,
    translate_state_dict,
)
from flashocc_ros.model.flashocc import FlashOCC, build_model

torch.set_num_threads(2)


class FakeMmcvConfig:
    """Stands in for mmcv objects that `weights_only=True` refuses."""

    def __init__(self) -> None:
        self.text = "model = dict(type='BEVDetOCC')"


class Exploit:
    """Unpickling this would run a shell command if globals were resolved freely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def synthetic_state_dict(keys: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(1234, dtype=torch.long)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out


def uninitialised(cfg_name: str) -> FlashOCC:
    """Full-size model without the (slow) random init; weights come from the checkpoint."""
    with torch.device("meta"):
        model = FlashOCC(model_config(cfg_name))
    return model.to_empty(device="cpu")


def test_official_mmcv_container_with_meta_objects_loads_strictly_and_exactly(
    tmp_path: Path,
) -> None:
    preset, key_file, _ = CASES[0]  # M0, the smallest official model
    if not (KEY_DIR / key_file).is_file():
        pytest.skip("official key list not available")
    state = synthetic_state_dict(read_key_file(KEY_DIR / key_file))
    marker = tmp_path / "exploited"
    path = tmp_path / "flashocc-r50-M0-256x704.pth"
    torch.save(
        {
            "meta": {
                "mmcv_version": "1.5.3",
                "config": FakeMmcvConfig(),
                "CLASSES": ("others", "free"),
                "hook_msgs": {"best": np.float64(31.95)},
                "payload": Exploit(marker),
            },
            "state_dict": state,
            "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": []},
        },
        path,
    )
    with pytest.raises(Exception):  # noqa: B017 - weights_only refuses the container itself
        torch.load(path, weights_only=True)
    model = load_checkpoint_into(uninitialised(preset), path)
    assert not marker.exists(), "a pickled callable was executed"
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("form", ["ema", "module_prefix", "bare"])
def test_other_container_forms_round_trip_exactly(tmp_path: Path, form: str) -> None:
    torch.manual_seed(1)
    state = build_model(TINY).state_dict()
    if form == "ema":
        obj: object = {"epoch": 24, "state_dict": state, "updates": 10560}
    elif form == "module_prefix":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = state
    path = tmp_path / f"{form}.pth"
    torch.save(obj, path)
    model = load_checkpoint_into(build_model(TINY), path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_translation_is_pure_and_only_strips_module_prefix() -> None:
    t = torch.zeros(1)
    src = {"module.a.b": t, "module.c": t}
    assert translate_state_dict(src) == {"a.b": t, "c": t}
    assert src == {"module.a.b": t, "module.c": t}
    mixed = {"module.a": t, "b": t}
    assert translate_state_dict(mixed) == mixed


def test_mismatches_are_reported_with_names_and_counts() -> None:
    model = build_model(TINY)
    state = dict(model.state_dict())
    missing = state.pop("occ_head.predicter.2.bias")
    state["img_neck.extra.weight"] = torch.zeros(1)
    state["occ_head.predicter.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model, state)
    msg = str(info.value)
    assert "1 missing" in msg and "occ_head.predicter.2.bias" in msg
    assert "1 unexpected" in msg and "img_neck.extra.weight" in msg
    assert "1 mis-shaped" in msg and "occ_head.predicter.0.weight: checkpoint (3, 3)" in msg
    state["occ_head.predicter.2.bias"] = missing
    del state["img_neck.extra.weight"]
    with pytest.raises(CheckpointError, match="mis-shaped"):  # refused before torch loads
        load_state_dict_strict(model, state)


def test_unreadable_and_non_tensor_containers_raise(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="non-tensor"):
        extract_state_dict({"state_dict": {"a": 1}})
    with pytest.raises(CheckpointError, match="not a mapping"):
        extract_state_dict([1, 2])


def test_our_safetensors_format_round_trips_model_and_config(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model(TINY_STEREO).eval()
    path = tmp_path / "tiny.safetensors"
    save_flashocc(model, TINY_STEREO, path)
    loaded, cfg = load_flashocc(path)
    assert cfg == TINY_STEREO and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        a = model(images(TINY_STEREO), rig_calib(TINY_STEREO))
        b = loaded(images(TINY_STEREO), rig_calib(TINY_STEREO))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same file also loads into an existing model through the generic entry point
    load_checkpoint_into(build_model(TINY_STEREO), path)
    with pytest.raises(CheckpointError):
        load_checkpoint_into(build_model(TINY), path)


def test_int8_weight_storage_is_small_bounded_and_keeps_the_rest_exact(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = build_model(TINY).eval()
    full, small = tmp_path / "full.safetensors", tmp_path / "q8.safetensors"
    save_flashocc(model, TINY, full)
    save_flashocc(model, TINY, small, weight_bits=8)
    assert small.stat().st_size < 0.4 * full.stat().st_size
    loaded, cfg = load_flashocc(small)
    assert cfg == TINY
    quantised = 0
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        if a.is_floating_point() and a.dim() >= 2 and a.numel() >= 1024:
            quantised += 1
            step = a.reshape(a.shape[0], -1).abs().amax(dim=1) / 127  # one step per channel
            err = (a - b).reshape(a.shape[0], -1).abs().amax(dim=1)
            assert torch.all(err <= step / 2 + 1e-7), name
        else:
            assert torch.equal(a, b), name  # biases, norms, BN statistics stay exact
    assert quantised > 10
    x, calib = images(TINY), rig_calib(TINY)
    with torch.no_grad():
        agree = (model.predict(x, calib) == loaded.predict(x, calib)).float().mean()
    assert agree > 0.97


def test_a_checkpoint_for_another_preset_says_which_preset_it_fits(tmp_path: Path) -> None:
    """Weights of the `tiny` preset loaded as `demo`: refused, naming `tiny` (found on the meta
    device, nothing allocated)."""
    from flashocc_ros.config import model_config
    from flashocc_ros.model.checkpoint import CheckpointError, load_checkpoint_into
    from flashocc_ros.model.flashocc import build_model

    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": build_model(model_config("tiny")).state_dict()}, path)
    with pytest.raises(CheckpointError, match="it fits model_config tiny"):
        load_checkpoint_into(build_model(model_config("demo")), path)
    torch.save({"state_dict": {"nothing.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="no model preset fits it"):
        load_checkpoint_into(build_model(model_config("tiny")), path)
