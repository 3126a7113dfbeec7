"""tf2_msgs/TFMessage (the real package, or the test shim) crosses real DDS on /tf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.ros


def test_tf_message_round_trips_on_tf(dds_pair: Callable[..., Any]) -> None:
    result = dds_pair("tf", "/tf", seed=5)
    assert result.receiver_rc == 0, result.report()
    assert result.publisher_rc == 0, result.report()
    assert "TFMessage on /tf" in result.receiver_out, result.report()
