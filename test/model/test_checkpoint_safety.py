"""Weights files that lie: crafted pickles, absurd embedded configs, relabelled safetensors dtypes.
In: small files written by the test (the `tiny` model). Out: a CheckpointError in the user's
terms, raised before anything large is allocated; never a pickled call run, never wrong numbers.
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_flashocc import TINY

from flashocc_ros.model.checkpoint import (
    CheckpointError,
    load_checkpoint_into,
    load_flashocc,
    save_flashocc,
)
from flashocc_ros.model.flashocc import build_model

Header = dict[str, Any]


class Exploit:
    """A pickle of this calls os.system when unpickled with globals resolved freely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_flashocc(build_model(TINY), TINY, path, weight_bits=8)
    return path


def rewrite_header(src: Path, dst: Path, edit: Callable[[Header], None]) -> Path:
    """Copy a safetensors file with its JSON header changed by `edit` (the data unchanged)."""
    raw = src.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    return dst


def edit_config(**changes: object) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        cfg = json.loads(header["__metadata__"]["model_config"])
        cfg.update(changes)
        header["__metadata__"]["model_config"] = json.dumps(cfg)

    return edit


def first_key(header: Header, dtype: str, suffix: str = "") -> str:
    return next(
        k for k, v in header.items() if k != "__metadata__" and v["dtype"] == dtype
        and k.endswith(suffix)
    )  # fmt: skip


def test_a_pickle_that_would_run_code_is_refused_in_the_users_terms(tmp_path: Path) -> None:
    marker = tmp_path / "exploited"
    path = tmp_path / "weights.pth"
    torch.save(Exploit(marker), path)
    with pytest.raises(CheckpointError, match="is a pickle that holds no checkpoint") as info:
        load_checkpoint_into(build_model(TINY), path)
    assert "system" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists(), "a pickled call was run"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"neck_channels": 65536}, r"neck_channels must be in \[1, 4096\], got 65536"),
        ({"input_size": [256, 1e9]}, r"input_size\[1\] must be an integer"),
        ({"depth_step": 1e-9}, "depth bins"),
        ({"num_classes": True}, "num_classes must be an integer"),
        ({"grid": {"voxel_size": 0.0}}, "voxel_size must be in"),
        ({"camera_names": []}, "camera_names must list 1 to 16"),
        # each value within bounds, together about 109 GiB: counted on the meta device
        ({"bev_channels": [4096] * 3, "bev_num_layers": [32] * 3}, r"GiB; at most 4 GiB"),
    ],
)
def test_an_absurd_embedded_config_is_refused_before_anything_is_allocated(
    tiny_file: Path, tmp_path: Path, changes: dict[str, object], match: str
) -> None:
    path = rewrite_header(tiny_file, tmp_path / "absurd.safetensors", edit_config(**changes))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match):
            load_flashocc(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # Python-side peak; torch allocations are covered by the meta count


@pytest.mark.parametrize(
    ("stored", "relabel", "reshape"),
    [
        ("F32", "I32", False),  # same size: safetensors accepts it, the numbers would be wrong
        ("F32", "F16", True),  # half the size: twice the elements, a shape no model has
        ("I8", "U8", False),  # an int8 weight read as unsigned
        ("I64", "F64", False),  # BatchNorm's num_batches_tracked read as a float
    ],
)
def test_a_relabelled_dtype_in_the_header_is_refused(
    tiny_file: Path, tmp_path: Path, stored: str, relabel: str, reshape: bool
) -> None:
    def edit(header: Header) -> None:
        key = first_key(header, stored)
        header[key]["dtype"] = relabel
        if reshape:
            header[key]["shape"] = [*header[key]["shape"][:-1], 2 * header[key]["shape"][-1]]

    path = rewrite_header(tiny_file, tmp_path / "relabelled.safetensors", edit)
    with pytest.raises(CheckpointError, match=r"mis-shaped|another dtype") as info:
        load_flashocc(path)
    assert relabel in str(info.value) or "mis-shaped" in str(info.value)
    with pytest.raises(CheckpointError, match=r"mis-shaped|another dtype"):
        load_checkpoint_into(build_model(TINY), path)


def test_the_unchanged_file_still_loads(tiny_file: Path, tmp_path: Path) -> None:
    """The header rewrite itself changes nothing: the checks above refuse the edits only."""
    path = rewrite_header(tiny_file, tmp_path / "same.safetensors", lambda _h: None)
    model, cfg = load_flashocc(path)
    assert cfg == TINY
    reference, _ = load_flashocc(tiny_file)
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_weights_are_written_atomically(tmp_path: Path) -> None:
    """A failing write leaves the previous file intact and no temporary file behind."""
    model = build_model(TINY)
    path = tmp_path / "w.safetensors"
    save_flashocc(model, TINY, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="weight_bits"):
        save_flashocc(model, TINY, path, weight_bits=4)

    class DiskFullError(RuntimeError):
        pass

    def explode(_tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half a file")  # then the disk fills, say
        raise DiskFullError

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("flashocc_ros.model.checkpoint.save_file", explode)
        with pytest.raises(DiskFullError):
            save_flashocc(model, TINY, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
