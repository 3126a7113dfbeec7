"""The model card of the shipped demo weights, generated from their training record.
In: flashocc_ros/weights/demo.json. Out: docs/model_card.md (Markdown).

    python -m flashocc_ros.tools.model_card            # rewrite docs/model_card.md
    python -m flashocc_ros.tools.model_card --check    # exit 1 when it is out of date

test/test_model_card.py keeps the committed card equal to what this writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The shipped weights' record (beside runtime.factory.DEMO_WEIGHTS; not imported: it loads torch).
RECORD = Path(__file__).resolve().parents[1] / "weights" / "demo.json"
CARD = Path(__file__).resolve().parents[2] / "docs" / "model_card.md"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f} %"


def _hours(seconds: Any) -> str:
    if seconds is None:
        return "–"
    minutes = round(float(seconds) / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _stage_rows(record: Mapping[str, Any]) -> list[str]:
    stages = dict(record.get("previous_stages", {}))
    stages[f"stage_{len(stages) + 1}"] = record
    rows = [
        "| stage | steps | training scenes / keyframes | s per step | time | "
        "held-out mIoU (trainer, frames) | held-out mIoU (packed, adjusted, 64 frames) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stage in stages.items():
        adjusted = stage.get("heldout_miou_packed_adjusted")
        if adjusted is None and stage is record:
            adjusted = record.get("packed", {}).get("heldout_miou_packed_weights")
        rows.append(
            f"| {name.split('_')[-1]} | {stage.get('steps', '–')} | "
            f"{stage.get('train_scenes', '–')} / {stage.get('train_keyframes', '–')} | "
            f"{stage.get('s_per_step', 0):.2f} | {_hours(stage.get('train_time_s'))} | "
            f"{_pct(stage.get('miou'))} ({stage.get('eval_frames', '–')}) | {_pct(adjusted)} |"
        )
    return rows


def _stage_notes(record: Mapping[str, Any]) -> list[str]:
    stages = dict(record.get("previous_stages", {}))
    stages[f"stage_{len(stages) + 1}"] = record
    out = []
    for name, stage in stages.items():
        number = name.split("_")[-1]
        note = re.sub(rf"^stage {number}:?\s*", "", str(stage.get("note", "")))
        out += [f"- **Stage {number}.** {note}".rstrip()]
        out += [f"  `{stage['command']}`"] if "command" in stage else []
    return out


def _class_table(per_class: Mapping[str, float], counts: Mapping[str, int]) -> list[str]:
    rows = ["| class | IoU | training voxels |", "|---|---|---|"]
    rows += [
        f"| {name} | {_pct(iou)} | {counts.get(name, '–'):,} |"
        if isinstance(counts.get(name), int)
        else f"| {name} | {_pct(iou)} | – |"
        for name, iou in per_class.items()
    ]
    return rows


def model_card(record: Mapping[str, Any]) -> str:
    """The Markdown card for one training record (demo.json)."""
    cfg = record.get("model_config", {})
    packed = record.get("packed", {})
    adjust = record.get("logit_adjustment", {})
    lines = [
        "# Model card: the shipped demo weights",
        "",
        "<!-- Generated from flashocc_ros/weights/demo.json by "
        "`python -m flashocc_ros.tools.model_card`; edit the record or the tool, not this. -->",
        "",
        f"`flashocc_ros/weights/{packed.get('file', 'demo.safetensors')}` is what the node runs "
        "with `model_config: demo` and no `weights`, and what `make demo` scores. It was "
        "trained by this project on its synthetic world only (no real images, no nuScenes): "
        "use it to see the node work, not on a vehicle. For real cameras use an official "
        "checkpoint (README: Official checkpoints).",
        "",
        "## The network",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for key in (
        "name", "backbone", "input_size", "downsample", "context_channels", "depth_start",
        "depth_stop", "depth_step", "bev_neck_channels", "head_channels", "camera_names",
    ):  # fmt: skip
        if key in cfg:
            lines.append(f"| `{key}` | `{json.dumps(cfg[key])}` |")
    lines += [
        f"| file | {packed.get('bytes', 0) / 1e6:.1f} MB, {packed.get('storage', '–')} |",
        "",
        "## Results (held-out synthetic scenes)",
        "",
        f"Held-out mIoU over {packed.get('heldout_frames', '–')} frames of "
        f"{record.get('val_scenes', '–')} unseen scenes (Occ3D protocol: camera mask, classes "
        f"0–16): **{_pct(packed.get('heldout_miou_packed_weights'))}** with the shipped packed "
        f"weights, {_pct(packed.get('heldout_miou_float32_weights'))} with their float32 "
        "originals, both scored in float32 as the node runs them (per class below; `free` is "
        "not in the mean).",
        "",
        *_class_table(
            packed.get("heldout_per_class_iou_packed", {}), adjust.get("class_voxel_counts", {})
        ),
        "",
        "## Training",
        "",
        f"{record.get('total_steps', '–')} steps × {record.get('images_per_step', '–')} images "
        f"in {len(record.get('previous_stages', {})) + 1} stages, "
        f"{_hours(record.get('total_train_time_s'))} of training on {record.get('device', '–')} "
        f"({record.get('threads', '–')} threads, torch {record.get('torch', '–')}). The last "
        f"stage saw {record.get('train_scenes', '–')} scenes / "
        f"{record.get('train_keyframes', '–')} keyframes.",
        "",
        *_stage_rows(record),
        "",
        *_stage_notes(record),
        "",
        "## Logit adjustment (folded into the head's last bias)",
        "",
        f"tau {adjust.get('chosen_tau', '–')}, chosen on {adjust.get('chosen_on', '–')}; "
        "training-frame mIoU by tau: "
        + ", ".join(
            f"{tau}: {_pct(m)}" for tau, m in adjust.get("training_frame_miou_by_tau", {}).items()
        )
        + ". Per-class biases: "
        + ", ".join(f"{k} {v:+.2f}" for k, v in adjust.get("class_bias", {}).items())
        + ".",
        "",
        f"`{adjust.get('command', '')}`",
        "",
        "The record (`flashocc_ros/weights/demo.json`) holds every command, seed and data size; "
        "`python -m flashocc_ros.tools.adjust_logits --remove` takes the adjustment out before "
        "training the weights further (docs/training.md). What else was tried on these weights "
        "and measured: docs/experiments.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model_card", description=__doc__)
    parser.add_argument("--record", type=Path, default=RECORD)
    parser.add_argument("--out", type=Path, default=CARD)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is out of date")
    args = parser.parse_args(argv)
    try:
        text = model_card(json.loads(args.record.read_text()))
    except (OSError, ValueError) as err:
        sys.stderr.write(f"model_card: cannot read {args.record}: {err}\n")
        return 2
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            sys.stderr.write(f"model_card: {args.out} is out of date; run without --check\n")
            return 1
        return 0
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
