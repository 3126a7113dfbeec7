"""Hand-off between the node's executor and its worker, and bundles waiting for /tf (ROS-free).
In: items from producer threads (bundles). Out: the newest item / the next bundle to process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):  # noqa: N818 - reads like the stdlib's queue.Empty / queue.Full
    """Raised by `LatestQueue.get` once the queue is closed and empty."""


class LatestQueue(Generic[T]):
    """Drop-oldest queue of capacity one: producers never block, the worker gets the newest item.

    `put` replaces an unconsumed item (counted in `dropped`); `get(timeout)` blocks until an item
    arrives (returns None on timeout) and raises `QueueClosed` after `close()`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._dropped = 0
        self._put = 0

    def put(self, item: T) -> bool:
        """Store `item`; True when an older unconsumed item was dropped. Ignored once closed."""
        with self._cond:
            if self._closed:
                return False
            replaced = self._has_item
            if replaced:
                self._dropped += 1
            self._item, self._has_item = item, True
            self._put += 1
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item (removing it); None after `timeout` s; QueueClosed once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if self._closed:
                raise QueueClosed("queue closed")
            item, self._item, self._has_item = self._item, None, False
            return item

    def take(self) -> T | None:
        """Remove and return the unconsumed item without waiting (None when empty or closed);
        not counted as dropped."""
        with self._cond:
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting `get` with QueueClosed; later puts are ignored."""
        with self._cond:
            self._closed = True
            self._item, self._has_item = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after `close()`."""
        return self._closed

    @property
    def dropped(self) -> int:
        """Items replaced before a consumer got them."""
        return self._dropped

    @property
    def put_count(self) -> int:
        """Items accepted by `put`."""
        return self._put


@dataclass(frozen=True)
class Released(Generic[T]):
    """What `PoseWaitList.release` hands back: the item to process now (or None), whether it
    is handed out only because it waited too long, and the older items it superseded."""

    ready: T | None
    timed_out: bool
    superseded: tuple[T, ...]


class PoseWaitList(Generic[T]):
    """Complete bundles waiting for their ego poses (/tf) and CameraInfo (worker only).

    /tf and images travel on different topics, and under load /tf can arrive seconds after the
    images it belongs to (seen on DDS over localhost with large images in flight). A worker that
    blocked on each bundle in turn would lose every bundle whose /tf is late; this list keeps up
    to `capacity` bundles (oldest first) and on each `release(is_ready, now)`:

    * hands out the oldest ready bundle, and drops every older one that is not ready while a
      newer one is ("superseded": the inputs of a newer bundle are in, so waiting longer for an
      older one would only hold the newer ones up);
    * when none is ready, hands out the oldest bundle that has waited `max_wait_s`, marked
      `timed_out` (the caller processes it anyway: extrapolated poses, or the real TF error);
    * when more than `capacity` bundles wait, `add` pushes the oldest out.

    Not thread-safe: one worker thread owns it. `now` is time.monotonic() seconds.
    """

    def __init__(self, max_wait_s: float, capacity: int = 4) -> None:
        if max_wait_s < 0 or capacity < 1:
            raise ValueError(
                f"max_wait_s must be >= 0 and capacity >= 1, got {max_wait_s}, {capacity}"
            )
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self._items: list[tuple[float, T]] = []  # (arrival time, item), oldest first

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> tuple[T, ...]:
        """Queue `item` (newest); returns the items pushed out by the capacity."""
        self._items.append((now, item))
        overflow = len(self._items) - self.capacity
        if overflow <= 0:
            return ()
        out = tuple(it for _, it in self._items[:overflow])
        del self._items[:overflow]
        return out

    def release(self, is_ready: Callable[[T], bool], now: float) -> Released[T]:
        """The bundle to process now, if any, and the bundles given up on (see the class)."""
        ready = [is_ready(item) for _, item in self._items]
        if any(ready):
            newest = max(i for i, r in enumerate(ready) if r)
            older = list(zip(self._items[:newest], ready[:newest], strict=True))
            superseded = tuple(it for (_, it), r in older if not r)
            self._items = [entry for entry, r in older if r] + self._items[newest:]
            return Released(self._items.pop(0)[1], False, superseded)
        if self._items and now - self._items[0][0] >= self.max_wait_s:
            _, oldest = self._items.pop(0)
            return Released(oldest, True, ())
        return Released(None, False, ())

    def clear(self) -> tuple[T, ...]:
        """Forget every waiting item (returned)."""
        out = tuple(it for _, it in self._items)
        self._items.clear()
        return out
