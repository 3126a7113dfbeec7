"""The demo report shows the recorded held-out mIoU of the shipped weights beside its own.
In: the shipped weights record (flashocc_ros/weights/demo.json). Out: assertions.
"""

from __future__ import annotations

import json

from flashocc_ros.runtime.factory import DEMO_WEIGHTS
from flashocc_ros.tools.demo import _recorded_evaluation


def test_report_quotes_the_recorded_heldout_miou_of_the_shipped_weights() -> None:
    record = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())["packed"]
    (line,) = _recorded_evaluation(str(DEMO_WEIGHTS))
    assert f"{100 * record['heldout_miou_packed_weights']:.2f} %" in line
    assert f"over {record['heldout_frames']} frames" in line


def test_report_quotes_nothing_for_other_weights(tmp_path: object) -> None:
    assert _recorded_evaluation("my_weights.safetensors") == []
