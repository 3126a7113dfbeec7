"""Trainer: the loss falls on a repeated batch, resume is exact, CLI errors, schedule shape, the
warning for bf16 on a CPU that emulates it.
In: the tiny generated dataset and the `tiny` model config. Out: assertions (a few seconds).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flashocc_ros import cpu
from flashocc_ros.classes import FREE_LABEL, NUM_CLASSES
from flashocc_ros.model.checkpoint import load_flashocc
from flashocc_ros.tools.train import main
from flashocc_ros.train import trainer
from flashocc_ros.train.data import class_counts
from flashocc_ros.train.trainer import TrainConfig, checkpoint_dirs, evaluate, lr_factor, train
from flashocc_ros.world.dataset import WorldDataset


def _cfg(data: Path, out: Path, **changes: object) -> TrainConfig:
    base: dict[str, object] = {
        "train_dirs": (data,),
        "out_dir": out,
        "model_config": "tiny",
        "steps": 4,
        "warmup_steps": 1,
        "lr": 2e-3,
        "depth_weight": 0.5,
        "log_every": 1,
        "checkpoint_every": 0,
    }
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_loss_falls_on_a_repeated_batch(tiny_data: Path, tmp_path: Path) -> None:
    """Both keyframes in every batch, no augmentation: the same batch each step (with the
    official class balance on, so its weighted loss is what falls)."""
    cfg = _cfg(
        tiny_data, tmp_path / "run", steps=8, batch_size=2, augment=False, min_lr_ratio=1.0,
        val_dir=tiny_data, eval_max_samples=1, class_balance=True,
    )  # fmt: skip
    result = train(cfg, "test")
    first, last = result.losses[0], sum(result.losses[-2:]) / 2
    assert last < 0.85 * first, result.losses
    record = json.loads((tmp_path / "run" / "train_record.json").read_text())
    assert record["steps"] == 8 and record["train_keyframes"] == 2 and record["seed"] == 0
    assert record["miou"] is not None and len(record["per_class_iou"]) == 18
    _model, model_cfg = load_flashocc(result.weights)
    assert model_cfg.name == "tiny"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["loss_depth"] > 0


def test_lovasz_term_is_added_logged_and_falls(tiny_data: Path, tmp_path: Path) -> None:
    """With `lovasz_weight` the step loss is occ + 0.5·depth + w·Lovász, each part logged, and
    the Lovász term falls on a repeated batch."""
    cfg = _cfg(
        tiny_data, tmp_path / "lv", steps=6, batch_size=2, augment=False, min_lr_ratio=1.0,
        lovasz_weight=2.0,
    )  # fmt: skip
    train(cfg, "test")
    rows = [json.loads(x) for x in (tmp_path / "lv" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        parts = row["loss_occ"] + 0.5 * row["loss_depth"] + 2.0 * row["loss_lovasz"]
        assert row["loss"] == pytest.approx(parts, rel=1e-5)
    assert 0 < rows[-1]["loss_lovasz"] < rows[0]["loss_lovasz"], rows


def test_class_counts_cover_every_masked_voxel(tiny_data: Path) -> None:
    data = WorldDataset(tiny_data)
    counts = class_counts(data, NUM_CLASSES)
    masked = sum(int(data.labels(r).mask_camera.astype(bool).sum()) for r in data.keyframes)
    assert counts.shape == (NUM_CLASSES,) and int(counts.sum()) == masked > 0
    assert counts[FREE_LABEL] == counts.max()


def test_resume_reproduces_an_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    full = _cfg(tiny_data, tmp_path / "full", checkpoint_every=2, keep_checkpoints=5)
    train(full, "test")
    steps = [p.name for p in checkpoint_dirs(tmp_path / "full")]
    assert steps == ["step_0000002", "step_0000004"]
    # A run interrupted after step 2: only its first checkpoint exists.
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", part / "step_0000002")
    result = train(_cfg(tiny_data, tmp_path / "part", checkpoint_every=2, resume=True), "test")
    assert len(result.losses) == 2
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = _cfg(Path("."), Path("."), steps=100, warmup_steps=10, min_lr_ratio=0.1)
    values = [lr_factor(s, cfg, 100) for s in range(101)]
    assert values[0] == pytest.approx(cfg.warmup_ratio)
    assert values[10] == pytest.approx(1.0)
    assert values[100] == pytest.approx(0.1)
    assert all(a <= b for a, b in itertools.pairwise(values[:11]))  # warm-up rises
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))  # cosine falls


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model-config", "nope"], "unknown model config"),
        (["--train", "/nonexistent/data"], "is not a dataset folder"),
        (["--resume"], "no checkpoint"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--lovasz-weight", "-1"], "lovasz_weight >= 0"),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["--train", str(tiny_data), "--out", str(tmp_path / "o"), "--model-config", "tiny"]
    if "--steps" not in extra:
        args += ["--steps", "1"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_cli_trains_on_several_folders(
    tiny_data: Path, tiny_data_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "two"
    same = ["--train", str(tiny_data), str(tiny_data), "--out", str(out), "--steps", "1"]
    assert main(same) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in both" in err[0], err
    args = ["--train", str(tiny_data), str(tiny_data_b), "--out", str(out), "--model-config",
            "tiny", "--steps", "2", "--depth-weight", "0", "--warmup-steps", "1"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "train_record.json").read_text())
    assert record["train_keyframes"] == 4 and record["train_scenes"] == 2
    assert record["config"]["train_dirs"] == [str(tiny_data), str(tiny_data_b)]


def test_bf16_on_a_cpu_without_fast_bf16_trains_and_warns(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """...and its held-out evaluation runs in float32, the precision the node runs by default."""
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    scored_bf16: list[bool] = []

    def spy(*args: object, **kwargs: object) -> object:
        scored_bf16.append(bool(args[3]) if len(args) > 3 else bool(kwargs.get("bf16")))
        return evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "evaluate", spy)
    cfg = _cfg(tiny_data, tmp_path / "bf16", steps=1, bf16=True, val_dir=tiny_data,
               eval_max_samples=1)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="flashocc_ros.cpu"):
        result = train(cfg)
    assert result.steps == 1 and math.isfinite(result.losses[-1])
    warnings = [r.getMessage() for r in caplog.records if r.name == "flashocc_ros.cpu"]
    assert len(warnings) == 1 and warnings[0].startswith("--bf16: ")
    assert scored_bf16 == [False]
