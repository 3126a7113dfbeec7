"""Bundle synchroniser and LatestQueue: matching rule, drop reasons, bounds, threads.
In: synthetic camera stamps. Out: pass/fail.
"""

from __future__ import annotations

import threading
import time

import pytest

from flashocc_ros.sensing.sync import (
    BundleSynchronizer,
    DropReason,
    LatestQueue,
    PoseWaitList,
    QueueClosed,
    Released,
)

CAMS = ("front_left", "front", "front_right")
MS = 1_000_000


def make(**kw: object) -> BundleSynchronizer[str]:
    return BundleSynchronizer(CAMS, slop_ns=20 * MS, **kw)  # type: ignore[arg-type]


def test_completes_in_any_arrival_order_with_key_stamp() -> None:
    sync = make()
    assert sync.add("front", 1005 * MS, "b") is None
    assert sync.add("front_right", 990 * MS, "c") is None
    bundle = sync.add("front_left", 1000 * MS, "a")
    assert bundle is not None
    assert bundle.stamp_ns == 1000 * MS
    assert [f.camera for f in bundle.frames] == list(CAMS)
    assert bundle.payloads == ("a", "b", "c")
    assert bundle.max_offset_ns == 10 * MS
    stats = sync.stats()
    assert stats.bundles_emitted == 1 and stats.total_dropped == 0 and stats.frames_received == 3


def test_picks_closest_frame_within_slop() -> None:
    sync = make()
    sync.add("front", 985 * MS, "far")
    sync.add("front", 1003 * MS, "near")
    sync.add("front_right", 1000 * MS, "c")
    bundle = sync.add("front_left", 1000 * MS, "a")
    assert bundle is not None and bundle.payloads == ("a", "near", "c")


def test_slop_is_inclusive_and_strict_outside() -> None:
    sync = make()
    sync.add("front", 1020 * MS, "b")
    sync.add("front_right", 980 * MS, "c")
    assert sync.add("front_left", 1000 * MS, "a") is not None
    sync2 = make()
    sync2.add("front", 1021 * MS, "b")
    sync2.add("front_right", 1000 * MS, "c")
    assert sync2.add("front_left", 1000 * MS, "a") is None
    # the front camera moved past key + slop without a match: candidate is hopeless
    assert sync2.stats().drops[DropReason.INCOMPLETE] == 1


def test_missing_camera_times_out() -> None:
    sync = make(timeout_ns=200 * MS)
    for k in range(10):
        t = 1000 * MS + k * 100 * MS
        sync.add("front_left", t, "a")
        sync.add("front", t, "b")  # front_right is dead
    stats = sync.stats()
    assert stats.bundles_emitted == 0
    # keys 1000..1600 ms are more than 200 ms older than the newest stamp (1900 ms)
    assert stats.drops[DropReason.TIMEOUT] == 7
    assert len(sync._pending) == 3


def test_newer_bundle_supersedes_older_candidate() -> None:
    sync = make()
    sync.add("front_left", 1000 * MS, "a0")
    sync.add("front_left", 1015 * MS, "a1")
    sync.add("front", 1010 * MS, "b")
    bundle = sync.add("front_right", 1012 * MS, "c")  # completes both: the newest wins
    assert bundle is not None and bundle.stamp_ns == 1015 * MS
    assert sync.stats().drops[DropReason.SUPERSEDED] == 1


def test_pending_overflow_is_superseded() -> None:
    sync = make(queue_size=2, timeout_ns=10**15)
    for t in (1000, 1100, 1200):
        sync.add("front_left", t * MS, "a")
    assert sync.stats().drops[DropReason.SUPERSEDED] == 1


def test_camera_moving_past_key_makes_it_incomplete() -> None:
    sync = make()
    sync.add("front_left", 1000 * MS, "a0")
    sync.add("front", 1100 * MS, "b1")
    assert sync.stats().drops[DropReason.INCOMPLETE] == 1


def test_duplicate_and_unknown_are_rejected() -> None:
    sync = make()
    sync.add("front", 1000 * MS, "b")
    assert sync.add("front", 1000 * MS, "b again") is None
    assert sync.add("rear", 1000 * MS, "x") is None
    drops = sync.stats().drops
    assert drops[DropReason.DUPLICATE_STAMP] == 1 and drops[DropReason.UNKNOWN_CAMERA] == 1


def test_time_backwards_resets_and_calls_back() -> None:
    resets: list[int] = []
    sync = make(on_reset=resets.append)
    for t in (1000, 1100):
        sync.add("front", t * MS, "b")
        sync.add("front_right", t * MS, "c")
        assert sync.add("front_left", t * MS, "a") is not None
    sync.add("front_left", 1200 * MS, "pending")
    sync.add("front", 50 * MS, "b")  # bag looped
    assert resets == [50 * MS]
    stats = sync.stats()
    assert stats.resets == 1 and stats.drops[DropReason.TIME_BACKWARDS] == 1
    sync.add("front_right", 50 * MS, "c")
    bundle = sync.add("front_left", 50 * MS, "a")
    assert bundle is not None and bundle.payloads == ("a", "b", "c")


def test_buffers_stay_bounded() -> None:
    sync = make(queue_size=4, timeout_ns=10**15)
    for k in range(1000):
        sync.add("front", k * 100 * MS, "b")  # only one camera ever talks
        sync.add("front_left", k * 100 * MS + 50 * MS, "a")
    assert all(len(buf) <= 4 for buf in sync._buffers.values())
    assert len(sync._pending) <= 4


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="unique"):
        BundleSynchronizer(("a", "a"), 1)
    with pytest.raises(ValueError, match="empty"):
        BundleSynchronizer((), 1)
    with pytest.raises(ValueError, match="timeout_ns"):
        BundleSynchronizer(("a",), 10, timeout_ns=5)


def test_single_camera_emits_every_frame() -> None:
    sync: BundleSynchronizer[int] = BundleSynchronizer(("only",), 0)
    assert [sync.add("only", t, t) is not None for t in (1, 2, 3)] == [True, True, True]


def test_threads_emit_each_bundle_once() -> None:
    sync: BundleSynchronizer[str] = BundleSynchronizer(
        CAMS, slop_ns=5 * MS, queue_size=64, timeout_ns=10**15
    )
    got: list[int] = []
    lock = threading.Lock()

    def feed(cam: str) -> None:
        for k in range(300):
            b = sync.add(cam, (k + 1) * 100 * MS, cam)
            if b is not None:
                with lock:
                    got.append(b.stamp_ns)

    threads = [threading.Thread(target=feed, args=(c,)) for c in CAMS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got))
    stats = sync.stats()
    assert stats.frames_received == 900
    assert stats.bundles_emitted == len(got) > 0


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
def test_wait_list_hands_out_the_newest_ready_and_supersedes_older() -> None:
    wl: PoseWaitList[int] = PoseWaitList(max_wait_s=1.0)
    ready: set[int] = set()
    for stamp, now in ((1, 0.0), (2, 0.1), (3, 0.2)):
        assert wl.add(stamp, now) == ()
    assert wl.release(ready.__contains__, 0.3) == Released(None, False, ())
    ready.update({1, 2})  # /tf caught up to bundle 2, not yet 3
    assert wl.release(ready.__contains__, 0.4) == Released(2, False, (1,))
    assert len(wl) == 1
    ready.add(3)
    assert wl.release(ready.__contains__, 0.5) == Released(3, False, ())
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
