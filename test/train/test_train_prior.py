"""Logit adjustment: the folded bias shifts every height's logits by exactly the class bias, the
tau = 0 sweep equals the reference evaluator, the per-class fit's fast steps score exactly like the
plain evaluation and recover a known offset, the CLI writes weights that carry the bias, and its
--remove takes that bias out again.
In: the tiny generated dataset and the `tiny` config (random weights); seeded synthetic logits.
Out: assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.checkpoint import load_flashocc, save_flashocc
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.tools.adjust_logits import main
from flashocc_ros.train.data import OccupancyDataset, batch_calibration
from flashocc_ros.train.prior import (
    VisibleLogits,
    biased_miou,
    class_log_prior,
    fit_class_bias,
    fold_class_bias,
    visible_logits,
)
from flashocc_ros.train.trainer import evaluate


def test_class_log_prior_is_a_finite_log_distribution() -> None:
    prior = class_log_prior(np.array([0, 10, 90]))
    assert torch.isfinite(prior).all()
    assert abs(float(prior.exp().sum()) - 1.0) < 0.02  # the absent class counts as one voxel


def test_folded_bias_shifts_each_class_at_every_height(tiny_data: Path) -> None:
    cfg = model_config("tiny")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    item = OccupancyDataset(tiny_data, cfg, train=False)[0]
    batch = {k: v[None] for k, v in item.items()}
    with torch.no_grad():
        before = net(batch["images"], batch_calibration(batch))
    bias = torch.linspace(-2.0, 3.0, cfg.num_classes)
    fold_class_bias(net, bias)
    with torch.no_grad():
        after = net(batch["images"], batch_calibration(batch))
    torch.testing.assert_close(after - before, bias.expand_as(before), atol=1e-4, rtol=0)


def test_sweep_at_tau_zero_equals_the_evaluator(tiny_data: Path) -> None:
    cfg = model_config("tiny")
    torch.manual_seed(1)
    net = build_model(cfg)
    data = OccupancyDataset(tiny_data, cfg, train=False)
    prior = class_log_prior(np.arange(1, cfg.num_classes + 1) * 100)
    vis = visible_logits(net, data, frames=2)
    ref = evaluate(net, data, torch.device("cpu"))
    np.testing.assert_array_equal(biased_miou(vis, 0.0 * prior).confusion, ref.confusion)
    assert biased_miou(vis, 0.0 * prior).num_frames == ref.num_frames == 2
    assert not np.array_equal(biased_miou(vis, -1.0 * prior).confusion, ref.confusion)


def _synthetic_logits(offset: float) -> VisibleLogits:
    """Noisy logits that favour each voxel's true class, with class 2 pushed down by `offset`;
    integer-valued so that ties between classes occur and exercise the tie rule."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 18, (20_000,), generator=gen)
    logits = torch.randint(-3, 4, (20_000, 18), generator=gen).float()
    logits[torch.arange(20_000), labels] += 3.0
    logits[:, 2] -= offset
    return VisibleLogits(logits, labels, frames=1)


def test_per_class_fit_steps_score_like_the_plain_evaluation() -> None:
    vis = _synthetic_logits(offset=0.0)
    start = torch.zeros(18)
    # one round, one step per class: the result is what the fast path chose; the plain
    # evaluation of that bias must give the recorded mIoU exactly (ties included)
    for steps in ((1.0,), (-1.0,), (0.5, -2.0)):
        bias, history = fit_class_bias(vis, start, steps=steps, rounds=1)
        assert history[-1] == biased_miou(vis, bias).miou
        assert history[-1] >= history[0] == biased_miou(vis, start).miou


def test_per_class_fit_recovers_a_known_class_offset() -> None:
    vis = _synthetic_logits(offset=2.0)
    bias, history = fit_class_bias(vis, torch.zeros(18), steps=(-1.0, -0.5, 0.5, 1.0), rounds=4)
    assert history[-1] > history[0] + 0.01
    assert 1.5 <= float(bias[2] - bias.median()) <= 2.5  # the pushed-down class is lifted back


def test_cli_folds_the_chosen_tau_and_records_it(tiny_data: Path, tmp_path: Path) -> None:
    cfg = model_config("tiny")
    torch.manual_seed(2)
    save_flashocc(build_model(cfg), cfg, tmp_path / "w.safetensors")
    out = tmp_path / "adjusted.safetensors"
    args = ["--weights", str(tmp_path / "w.safetensors"), "--train", str(tiny_data)]
    assert main([*args, "--out", str(out), "--taus", "0,0.5", "--frames", "2"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())["logit_adjustment"]
    assert set(record["training_frame_miou_by_tau"]) == {"0", "0.5"}
    tau = record["chosen_tau"]
    assert record["training_frame_miou_by_tau"][f"{tau:g}"] == max(
        record["training_frame_miou_by_tau"].values()
    )
    base, _ = load_flashocc(tmp_path / "w.safetensors")
    adjusted, _ = load_flashocc(out)
    delta = adjusted.occ_head.predicter[-1].bias - base.occ_head.predicter[-1].bias
    counts = np.array(list(record["class_voxel_counts"].values()))
    expected = (-tau * class_log_prior(counts)).repeat(cfg.grid.shape[2])
    torch.testing.assert_close(delta.detach(), expected, atol=1e-5, rtol=0)
    assert "class_bias" not in record
    per_class = tmp_path / "per_class.safetensors"
    assert (
        main([*args, "--out", str(per_class), "--frames", "2", "--per-class", "--rounds", "1"])
        == 0
    )
    record = json.loads(per_class.with_suffix(".json").read_text())["logit_adjustment"]
    fitted = torch.tensor(list(record["class_bias"].values()))
    delta = (
        load_flashocc(per_class)[0].occ_head.predicter[-1].bias - base.occ_head.predicter[-1].bias
    )
    torch.testing.assert_close(delta.detach(), fitted.repeat(cfg.grid.shape[2]), atol=1e-5, rtol=0)
    assert record["training_frame_miou_by_round"][-1] >= max(
        record["training_frame_miou_by_tau"].values()
    )
    with pytest.raises(SystemExit) as exc:  # argparse: one usage line, exit 2
        main([*args, "--out", str(out), "--taus", "x"])
    assert exc.value.code == 2
    assert main([*args, "--out", str(out), "--frames", "0"]) == 2


def test_cli_remove_restores_the_unadjusted_weights(tiny_data: Path, tmp_path: Path) -> None:
    """--remove RECORD subtracts what the tau-only and the per-class fits folded in."""
    cfg = model_config("tiny")
    torch.manual_seed(3)
    base = tmp_path / "w.safetensors"
    save_flashocc(build_model(cfg), cfg, base)
    want = load_flashocc(base)[0].occ_head.predicter[-1].bias.detach()
    fit = ["--weights", str(base), "--train", str(tiny_data), "--frames", "2", "--rounds", "1"]
    restored = tmp_path / "restored.safetensors"
    for extra in ([], ["--per-class"]):
        adjusted = tmp_path / "adjusted.safetensors"
        assert main([*fit, "--taus", "0.5", "--out", str(adjusted), *extra]) == 0
        moved = load_flashocc(adjusted)[0].occ_head.predicter[-1].bias.detach()
        assert (moved - want).abs().max() > 0.1  # the fit did fold something
        remove = ["--weights", str(adjusted), "--remove", str(adjusted.with_suffix(".json"))]
        assert main([*remove, "--out", str(restored)]) == 0
        got = load_flashocc(restored)[0].occ_head.predicter[-1].bias.detach()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    no_entry = tmp_path / "record.json"
    no_entry.write_text(json.dumps({"steps": 1}))
    assert main(["--weights", str(base), "--remove", str(no_entry), "--out", str(restored)]) == 2
    assert main(["--weights", str(base), "--out", str(restored)]) == 2  # no --train, no --remove
