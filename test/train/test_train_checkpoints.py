"""Resume state files: plain values only, read with weights_only, crafted files refused (1 line).
In: the tiny dataset and model, checkpoint folders written by `save_checkpoint`. Out: assertions.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.checkpoint import CheckpointError
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.tools.train import main
from flashocc_ros.train.checkpoints import (
    STATE_FILE,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Exploit:
    """A pickle of this calls os.system when unpickled with `weights_only=False`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(out: Path) -> Path:
    """out/checkpoints/step_0000002 with the tiny model and a real optimizer/scheduler state."""
    net = build_model(model_config("tiny"))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return save_checkpoint(out, 2, net, optimizer, scheduler, keep=3)


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(3), np.random.rand(3), random.random()


def test_the_state_file_holds_only_plain_values_and_restores_every_rng(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(folder / STATE_FILE) == []
    state = load_state(folder / STATE_FILE)
    assert state["step"] == 2 and set(state) >= {"optimizer", "scheduler", "rng"}
    torch.load(folder / STATE_FILE, weights_only=True)  # no allow-list needed
    set_rng_state(state["rng"])
    first = _draws()
    set_rng_state(state["rng"])
    again = _draws()
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_a_state_of_the_earlier_format_still_resumes(tmp_path: Path) -> None:
    """Before the plain format the numpy RNG state was pickled as a numpy array."""
    legacy = dict(rng_state())
    legacy["numpy"] = np.random.get_state()
    legacy["python"] = random.getstate()
    path = tmp_path / STATE_FILE
    torch.save({"step": 7, "optimizer": {}, "scheduler": {}, "rng": legacy}, path)
    expected = _draws()
    set_rng_state(load_state(path)["rng"])
    got = _draws()
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_a_crafted_state_that_would_run_code_is_refused_by_train_resume(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    folder = _checkpoint(out)
    marker = tmp_path / "exploited"
    torch.save({"step": 2, "rng": Exploit(marker)}, folder / STATE_FILE)
    argv = ["--train", str(tiny_data), "--out", str(out), "--model-config", "tiny"]
    code = main([*argv, "--steps", "4", "--resume"])
    err = capsys.readouterr().err
    assert not marker.exists(), "a pickled call was run"
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"{folder / STATE_FILE} is a pickle that holds no checkpoint" in lines[0]
    assert "system" in lines[0]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a pickle at all", "is not a readable trainer state"),
        ({"step": 1}, "holds no trainer state"),
        ({"step": -3, "optimizer": {}, "scheduler": {}, "rng": {}}, "not a step count"),
        ({"step": 1, "optimizer": [], "scheduler": {}, "rng": {}}, "'optimizer' is a list"),
    ],
)
def test_states_that_are_no_trainer_state_are_refused(
    tmp_path: Path, content: object, match: str
) -> None:
    path = tmp_path / STATE_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_state(path)


def test_a_malformed_rng_state_is_refused() -> None:
    with pytest.raises(CheckpointError, match="RNG state is malformed"):
        set_rng_state({"torch": torch.get_rng_state(), "numpy": {"kind": "MT19937"}})
