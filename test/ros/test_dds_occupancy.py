"""flashocc_ros/msg/Occupancy crosses real DDS between two processes with every field intact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.ros


def test_occupancy_round_trips_between_two_processes(dds_pair: Callable[..., Any]) -> None:
    result = dds_pair("occupancy", "/flashocc_test/occupancy", seed=11)
    assert result.receiver_rc == 0, result.report()
    assert result.publisher_rc == 0, result.report()
    assert "every field as sent 200x200x16" in result.receiver_out, result.report()


def test_receiver_detects_a_different_grid(dds_pair: Callable[..., Any]) -> None:
    """The check is not vacuous: a grid from another seed is reported field by field."""
    result = dds_pair("occupancy", "/flashocc_test/occupancy", seed=11, receiver_seed=12)
    assert result.receiver_rc == 1, result.report()
    assert "MISMATCH labels" in result.receiver_out, result.report()
    assert "MISMATCH header" in result.receiver_out, result.report()
