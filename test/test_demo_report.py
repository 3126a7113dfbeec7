"""The demo report shows the recorded held-out mIoU of the shipped weights beside its own, and
says why keyframes gave no grid when some did not.
In: the shipped weights record (flashocc_ros/weights/demo.json), node diagnostics. Out: assertions.
"""

from __future__ import annotations

import json

from flashocc_ros.runtime.factory import DEMO_WEIGHTS
from flashocc_ros.tools.demo import _missing_grids, _recorded_evaluation


def test_report_quotes_the_recorded_heldout_miou_of_the_shipped_weights() -> None:
    record = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())["packed"]
    (line,) = _recorded_evaluation(str(DEMO_WEIGHTS))
    assert f"{100 * record['heldout_miou_packed_weights']:.2f} %" in line
    assert f"over {record['heldout_frames']} frames" in line


def test_report_quotes_nothing_for_other_weights(tmp_path: object) -> None:
    assert _recorded_evaluation("my_weights.safetensors") == []


def test_report_explains_missing_grids_from_the_node_counters() -> None:
    diagnostics = {
        "backend": "torch-cpu-fp32",
        "count.bundles_processed": "8",
        "count.images_in.CAM_FRONT": "10",
        "count.images_in.CAM_BACK": "9",
        "count.superseded_waiting_tf": "2",
        "count.bundles_failed": "0",
        "queue.superseded": "0",
    }
    (line,) = _missing_grids(10, 8, diagnostics)
    assert line.startswith("missing: 2 of 10 keyframes")
    assert "superseded_waiting_tf 2" in line
    assert "bundles_failed" not in line and "queue.superseded" not in line  # zero counters
    assert "CAM_BACK 9" in line and "CAM_FRONT 10" in line
    assert _missing_grids(10, 10, diagnostics) == []
    (nothing,) = _missing_grids(10, 9, {})
    assert "no drop or failure counted" in nothing and "per camera: none" in nothing
