"""LatestQueue (executor -> worker hand-off) and PoseWaitList (bundles waiting for /tf).
In: items and readiness predicates. Out: pass/fail.
"""

from __future__ import annotations

import threading
import time

import pytest

from flashocc_ros.sensing.queues import LatestQueue, PoseWaitList, QueueClosed, Released


def test_latest_queue_drops_oldest_and_counts() -> None:
    q: LatestQueue[int] = LatestQueue()
    assert q.put(1) is False
    assert q.put(2) is True
    assert q.dropped == 1 and q.put_count == 2
    assert q.get(0.01) == 2
    assert q.get(0.01) is None


def test_latest_queue_take_empties_without_waiting_or_counting() -> None:
    q: LatestQueue[int] = LatestQueue()
    assert q.take() is None
    q.put(1)
    assert q.take() == 1 and q.take() is None
    assert q.dropped == 0 and q.get(timeout=0.01) is None


def test_latest_queue_blocks_until_put_and_close_wakes() -> None:
    q: LatestQueue[str] = LatestQueue()
    out: list[object] = []

    def worker() -> None:
        while True:
            try:
                item = q.get(1.0)
            except QueueClosed:
                out.append("closed")
                return
            if item is not None:
                out.append(item)

    t = threading.Thread(target=worker)
    t.start()
    q.put("x")
    deadline = time.monotonic() + 2.0
    while not out and time.monotonic() < deadline:
        time.sleep(0.005)
    q.close()
    t.join(2.0)
    assert not t.is_alive()
    assert out == ["x", "closed"]
    assert q.closed and q.put("late") is False


# --- PoseWaitList: bundles waiting for late /tf --------------------------------------------------
def test_wait_list_hands_out_ready_bundles_oldest_first_and_supersedes_stuck_ones() -> None:
    wl: PoseWaitList[int] = PoseWaitList(max_wait_s=1.0)
    ready: set[int] = set()
    for stamp, now in ((1, 0.0), (2, 0.1), (3, 0.2), (4, 0.3)):
        assert wl.add(stamp, now) == ()
    assert wl.release(ready.__contains__, 0.3) == Released(None, False, ())
    ready.update({2, 3})  # bundle 1 is stuck, 2 and 3 are ready, 4 is not yet
    assert wl.release(ready.__contains__, 0.4) == Released(2, False, (1,))
    assert wl.release(ready.__contains__, 0.4) == Released(3, False, ())
    assert len(wl) == 1
    ready.add(4)
    assert wl.release(ready.__contains__, 0.5) == Released(4, False, ())
    assert len(wl) == 0


def test_wait_list_times_out_the_oldest_only_after_max_wait() -> None:
    wl: PoseWaitList[str] = PoseWaitList(max_wait_s=0.5)
    wl.add("a", 0.0)
    wl.add("b", 0.3)
    never = lambda _item: False  # noqa: E731
    assert wl.release(never, 0.49).ready is None
    assert wl.release(never, 0.5) == Released("a", True, ())
    assert wl.release(never, 0.79).ready is None
    assert wl.release(never, 0.8) == Released("b", True, ())


def test_wait_list_capacity_pushes_out_the_oldest() -> None:
    wl: PoseWaitList[int] = PoseWaitList(max_wait_s=1.0, capacity=2)
    assert wl.add(1, 0.0) == () and wl.add(2, 0.0) == ()
    assert wl.add(3, 0.0) == (1,)
    assert wl.clear() == (2, 3) and len(wl) == 0
    with pytest.raises(ValueError):
        PoseWaitList(max_wait_s=-1.0)
