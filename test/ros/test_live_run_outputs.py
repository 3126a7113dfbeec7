"""Before playing, live_run waits for the publishers of the node's enabled outputs only: an output
switched off by a parameter must not hold the replay up until the timeout.
In: parameter mappings. Out: the awaited topic names.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros


def test_awaited_outputs_follow_the_publish_parameters() -> None:
    from flashocc_ros.ros.live_run import awaited_outputs

    every = ["occupancy", "markers", "points", "bev_image"]
    assert awaited_outputs({}) == [f"/flashocc/output/{t}" for t in every]
    off = {"publish_markers": False, "publish_bev_image": False, "publish_points": True}
    assert awaited_outputs(off) == ["/flashocc/output/occupancy", "/flashocc/output/points"]
