"""Camera bundle synchroniser and a drop-oldest hand-off queue, ROS-free and thread-safe.
In: (camera name, stamp ns, payload) frames from N camera callbacks. Out: complete `Bundle`s.

Rule (replaces message_filters ApproximateTime): the first camera is the key camera (the official
pipeline uses cams[0] as the key frame). Every key frame opens a candidate bundle whose stamp is
the key frame's stamp. The candidate completes as soon as every other camera has a buffered frame
with ``|stamp - key stamp| <= slop`` (the closest one is taken). A candidate is dropped when

* INCOMPLETE: some camera already delivered a frame later than ``key + slop`` without a match
  (stamps are monotonic per topic, so no match can come any more);
* TIMEOUT: the newest stamp seen on any camera is more than ``timeout_ns`` past the key stamp;
* SUPERSEDED: a newer candidate completed first, or the pending candidates overflowed;
* TIME_BACKWARDS: a camera's stamp went backwards (bag loop / sim reset): all buffers reset.

Rejected input frames are counted per message: DUPLICATE_STAMP (same stamp again on one camera)
and UNKNOWN_CAMERA. All buffers are bounded by ``queue_size`` per camera.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

_LOG = logging.getLogger(__name__)

T = TypeVar("T")


class DropReason(Enum):
    """Why a candidate bundle (or, for the last two, an input frame) was discarded."""

    INCOMPLETE = "incomplete"  # a camera moved past key + slop without a matching frame
    TIMEOUT = "timeout"  # newest stamp seen is more than timeout_ns after the key stamp
    SUPERSEDED = "superseded"  # a newer bundle completed first / pending overflow
    TIME_BACKWARDS = "time_backwards"  # discarded by a reset after time went backwards
    DUPLICATE_STAMP = "duplicate_stamp"  # input frame: same stamp twice on one camera
    UNKNOWN_CAMERA = "unknown_camera"  # input frame: camera name not configured


@dataclass(frozen=True)
class Frame(Generic[T]):
    """One camera message: name, header stamp (ns since epoch) and an opaque payload."""

    camera: str
    stamp_ns: int
    payload: T


@dataclass(frozen=True)
class Bundle(Generic[T]):
    """N synchronised frames in configured camera order; `stamp_ns` is the key camera's stamp."""

    stamp_ns: int
    frames: tuple[Frame[T], ...]

    @property
    def payloads(self) -> tuple[T, ...]:
        """(N,) payloads in camera order."""
        return tuple(f.payload for f in self.frames)

    @property
    def max_offset_ns(self) -> int:
        """Largest |frame stamp - bundle stamp| in the bundle (ns)."""
        return max(abs(f.stamp_ns - self.stamp_ns) for f in self.frames)


@dataclass(frozen=True)
class SyncStats:
    """Snapshot of the synchroniser counters (drops: candidates, or frames for input rejects)."""

    frames_received: int
    bundles_emitted: int
    resets: int
    drops: Mapping[DropReason, int] = field(default_factory=dict)

    @property
    def total_dropped(self) -> int:
        """Sum over all drop reasons."""
        return sum(self.drops.values())


@dataclass
class _Candidate:
    stamp_ns: int
    key: Frame[Any]


class BundleSynchronizer(Generic[T]):
    """Groups frames of N named cameras into bundles stamped by the key camera (index 0).

    Thread-safe: `add` may be called concurrently from several executor threads.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        slop_ns: int,
        *,
        queue_size: int = 8,
        timeout_ns: int = 1_000_000_000,
        on_reset: Callable[[int], None] | None = None,
    ) -> None:
        """cameras: (N,) unique names, index 0 is the key camera; slop_ns >= 0;
        queue_size: frames buffered per camera (and pending candidates); timeout_ns > slop_ns;
        on_reset(stamp_ns): called (outside the lock) after time went backwards.
        """
        if not cameras:
            raise ValueError("cameras must not be empty")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names must be unique, got {list(cameras)}")
        if slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {slop_ns}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if timeout_ns <= slop_ns:
            raise ValueError(f"timeout_ns ({timeout_ns}) must exceed slop_ns ({slop_ns})")
        self._cameras = tuple(cameras)
        self._slop = int(slop_ns)
        self._timeout = int(timeout_ns)
        self._queue_size = queue_size
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._buffers: dict[str, collections.deque[Frame[T]]] = {
            c: collections.deque(maxlen=queue_size) for c in self._cameras[1:]
        }
        self._pending: collections.deque[_Candidate] = collections.deque()
        self._last_stamp: dict[str, int] = {}
        self._newest = -(2**63)
        self._frames = 0
        self._emitted = 0
        self._resets = 0
        self._drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    @property
    def cameras(self) -> tuple[str, ...]:
        """(N,) camera names; index 0 is the key camera."""
        return self._cameras

    def add(self, camera: str, stamp_ns: int, payload: T) -> Bundle[T] | None:
        """Buffer one frame; return the bundle it completes (newest one), else None."""
        reset_at: int | None = None
        with self._lock:
            self._frames += 1
            if camera not in self._cameras:
                self._drops[DropReason.UNKNOWN_CAMERA] += 1
                return None
            last = self._last_stamp.get(camera)
            if last is not None and stamp_ns == last:
                self._drops[DropReason.DUPLICATE_STAMP] += 1
                return None
            if last is not None and stamp_ns < last:
                self._reset_locked()
                reset_at = stamp_ns
            self._last_stamp[camera] = stamp_ns
            self._newest = max(self._newest, stamp_ns)
            frame = Frame(camera, stamp_ns, payload)
            if camera == self._cameras[0]:
                if len(self._pending) == self._queue_size:
                    self._pending.popleft()
                    self._drops[DropReason.SUPERSEDED] += 1
                self._pending.append(_Candidate(stamp_ns, frame))
            else:
                self._buffers[camera].append(frame)
            bundle = self._match_locked()
        if reset_at is not None:
            _LOG.warning("camera %s stamp went backwards to %d ns: sync reset", camera, reset_at)
            if self._on_reset is not None:
                self._on_reset(reset_at)
        return bundle

    def reset(self) -> None:
        """Forget all buffered frames and pending candidates (counted as TIME_BACKWARDS)."""
        with self._lock:
            self._reset_locked()

    def stats(self) -> SyncStats:
        """Frozen snapshot of the counters."""
        with self._lock:
            return SyncStats(
                frames_received=self._frames,
                bundles_emitted=self._emitted,
                resets=self._resets,
                drops=MappingProxyType(dict(self._drops)),
            )

    # -- internals (lock held) ---------------------------------------------------------------

    def _reset_locked(self) -> None:
        self._drops[DropReason.TIME_BACKWARDS] += len(self._pending)
        self._pending.clear()
        for buf in self._buffers.values():
            buf.clear()
        self._last_stamp.clear()
        self._newest = -(2**63)
        self._resets += 1

    def _best_match(self, camera: str, key_ns: int) -> Frame[T] | None:
        best: Frame[T] | None = None
        for f in self._buffers[camera]:
            off = abs(f.stamp_ns - key_ns)
            if off <= self._slop and (best is None or off < abs(best.stamp_ns - key_ns)):
                best = f
        return best

    def _hopeless(self, camera: str, key_ns: int) -> bool:
        last = self._last_stamp.get(camera)
        return last is not None and last > key_ns + self._slop

    def _match_locked(self) -> Bundle[T] | None:
        # Expire candidates that can no longer complete.
        kept: collections.deque[_Candidate] = collections.deque()
        for cand in self._pending:
            if self._newest - cand.stamp_ns > self._timeout:
                self._drops[DropReason.TIMEOUT] += 1
            else:
                kept.append(cand)
        self._pending = kept
        # Newest complete candidate wins; older ones are superseded.
        for idx in range(len(self._pending) - 1, -1, -1):
            cand = self._pending[idx]
            matches: list[Frame[T]] = []
            for cam in self._cameras[1:]:
                m = self._best_match(cam, cand.stamp_ns)
                if m is None:
                    break
                matches.append(m)
            if len(matches) == len(self._cameras) - 1:
                return self._emit_locked(idx, cand, matches)
        # Nothing complete: drop candidates some camera has already moved past.
        kept = collections.deque()
        for cand in self._pending:
            if any(
                self._best_match(c, cand.stamp_ns) is None and self._hopeless(c, cand.stamp_ns)
                for c in self._cameras[1:]
            ):
                self._drops[DropReason.INCOMPLETE] += 1
            else:
                kept.append(cand)
        self._pending = kept
        return None

    def _emit_locked(self, idx: int, cand: _Candidate, matches: list[Frame[T]]) -> Bundle[T]:
        self._drops[DropReason.SUPERSEDED] += idx
        for _ in range(idx + 1):
            self._pending.popleft()
        for m in matches:
            buf = self._buffers[m.camera]
            while buf and buf[0].stamp_ns <= m.stamp_ns:  # used frame and older ones
                buf.popleft()
        self._emitted += 1
        return Bundle(cand.stamp_ns, (cand.key, *matches))


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
    """Complete bundles waiting for their ego poses (/tf), newest-ready-first (worker only).

    /tf and images travel on different topics, and under load /tf can arrive seconds after the
    images it belongs to (seen on DDS over localhost with large images in flight). A worker that
    blocked on each bundle in turn would lose every bundle whose /tf is late; this list keeps up
    to `capacity` bundles and on each `release(is_ready, now)`:

    * hands out the newest bundle whose poses are available and drops every older one
      ("superseded": a newer result makes them useless);
    * when none is ready, hands out the oldest bundle that has waited `max_wait_s`, marked
      `timed_out` (the caller processes it anyway and reports the real TF error);
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
        for i in range(len(self._items) - 1, -1, -1):
            if is_ready(self._items[i][1]):
                ready = self._items[i][1]
                superseded = tuple(it for _, it in self._items[:i])
                del self._items[: i + 1]
                return Released(ready, False, superseded)
        if self._items and now - self._items[0][0] >= self.max_wait_s:
            _, oldest = self._items.pop(0)
            return Released(oldest, True, ())
        return Released(None, False, ())

    def clear(self) -> tuple[T, ...]:
        """Forget every waiting item (returned)."""
        out = tuple(it for _, it in self._items)
        self._items.clear()
        return out
