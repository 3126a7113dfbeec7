"""Camera bundle synchroniser by trigger cycle, ROS-free and thread-safe.
In: (camera name, header stamp ns, payload) frames from N camera callbacks. Out: `Bundle`s.

The first camera is the key camera (the official pipeline uses cams[0] as the key frame): every
key frame opens a bundle stamped with its stamp K. Camera c belongs to K's trigger cycle with its
frame nearest the expected stamp ``K + phase_c``, where phase_c is the camera's trigger offset
from the key camera (configured, or measured from the streams: `trigger_phase`). That frame is
taken only when it lies within ``tolerance`` of the expected stamp.

Rule (why not message_filters' ApproximateTime: it pairs frames by closeness to each other, so on a
rig whose cameras fire up to half a period after the key camera it takes the previous cycle's frame
whenever that one is nearer; here each camera's own phase decides):

* A camera is **decided** for bundle K when its frame in the window ``|stamp - (K + phase)| <=
  tolerance`` has arrived and no nearer one can still come (the camera's period exceeds twice the
  tolerance, or it already delivered a frame at or after the expected stamp) -> present; or when
  it can no longer arrive -> missing: the camera delivered a later frame past the window (stamps
  are in order per topic), or the key camera has moved `timeout` past the window (a silent or
  lagging camera).
* A bundle is emitted, in key-stamp order, once every camera is decided. Never while a camera's
  right frame is still due, and never with another cycle's frame while it is due.
* Missing frames (`MissingRule`): DROP (default) drops the bundle; FILL completes it with the
  camera's frame nearest the expected stamp within `fill_tolerance`, if any (else drops it).
  Both are counted per camera.
* A frame whose stamp repeats the camera's previous one is a DUPLICATE (ignored); a stamp more than
  `jump_back` older than the camera's newest means time went backwards (bag loop, simulator
  reset): everything pending is dropped (phases and periods are kept), `on_reset` is called.
  A frame slightly older than the camera's newest (reordered delivery) is still used while its
  bundle is undecided; after that it is LATE.
* Until a camera's phase is known its bundles wait: bounded by `max_pending`, and given up (the
  camera missing) once the key camera is `timeout` past the time a measurement needs.
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from flashocc_ros.sensing.trigger_phase import estimate_phase, median_period_ns, unwrap_cycle

_LOG = logging.getLogger(__name__)

T = TypeVar("T")
_BUFFER = 64  # frames kept per camera (and key stamps kept for the period / phase estimate)


class MissingRule(Enum):
    """What to do with a bundle whose frame of some camera did not arrive in its window."""

    DROP = "drop"  # drop the bundle
    FILL = "fill"  # complete it with the camera's nearest frame within fill_tolerance


class DropReason(Enum):
    """Why a bundle (or, for the input rejects, a single frame) was discarded."""

    MISSING = "missing"  # a camera's frame of the cycle did not come (DROP, or nothing to fill)
    OVERFLOW = "overflow"  # more than max_pending bundles undecided
    TIME_BACKWARDS = "time_backwards"  # pending bundles discarded by a reset
    DUPLICATE_STAMP = "duplicate_stamp"  # input frame: same stamp twice on one camera
    UNKNOWN_CAMERA = "unknown_camera"  # input frame: camera name not configured
    LATE = "late"  # input frame: arrived after its bundle was decided


@dataclass(frozen=True)
class SyncConfig:
    """Synchroniser settings; every time in nanoseconds."""

    cameras: tuple[str, ...]  # (N,) unique names; index 0 is the key camera
    tolerance_ns: int = 15_000_000  # largest |stamp - (K + phase)| of a camera's frame of cycle K
    offsets_ns: tuple[int, ...] | None = None  # (N,) configured phases (key: 0); None = measure
    timeout_ns: int = 500_000_000  # key camera this far past a window: that frame is missing
    missing: MissingRule = MissingRule.DROP
    fill_tolerance_ns: int = 100_000_000  # FILL: largest |stamp - (K + phase)| of a stand-in
    max_pending: int = 32  # undecided bundles kept (oldest dropped beyond)
    phase_samples: int = 1  # frames a camera's phase is first measured from (then its latest 16)
    jump_back_ns: int = 250_000_000  # a stamp this much older than the newest: time reset

    def __post_init__(self) -> None:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be non-empty and unique, got {list(self.cameras)}")
        if self.tolerance_ns <= 0 or self.timeout_ns <= 0 or self.jump_back_ns <= 0:
            raise ValueError("tolerance, timeout and jump_back must be > 0")
        if self.fill_tolerance_ns < self.tolerance_ns:
            raise ValueError("fill_tolerance must be >= tolerance")
        if self.max_pending < 1 or self.phase_samples < 1:
            raise ValueError("need max_pending >= 1 and phase_samples >= 1")
        if self.offsets_ns is not None and (
            len(self.offsets_ns) != len(self.cameras) or self.offsets_ns[0] != 0
        ):
            raise ValueError(
                f"offsets must give one value per camera ({len(self.cameras)}) and 0 for the"
                f" key camera, got {list(self.offsets_ns)}"
            )


@dataclass(frozen=True)
class Frame(Generic[T]):
    """One camera message: name, header stamp (ns since epoch) and an opaque payload."""

    camera: str
    stamp_ns: int
    payload: T


@dataclass(frozen=True)
class Bundle(Generic[T]):
    """N frames of one trigger cycle in configured camera order; `stamp_ns` is the key stamp."""

    stamp_ns: int
    frames: tuple[Frame[T], ...]
    filled: tuple[str, ...] = ()  # cameras completed with another cycle's frame (rule FILL)

    @property
    def payloads(self) -> tuple[T, ...]:
        """(N,) payloads in camera order."""
        return tuple(f.payload for f in self.frames)

    @property
    def stamps_ns(self) -> tuple[int, ...]:
        """(N,) frame stamps in camera order."""
        return tuple(f.stamp_ns for f in self.frames)


@dataclass(frozen=True)
class SyncStats:
    """Snapshot of the synchroniser's counters and measured timing."""

    frames_received: int
    bundles_emitted: int
    resets: int
    drops: Mapping[DropReason, int] = field(default_factory=dict)
    missing: Mapping[str, int] = field(default_factory=dict)  # camera -> frames not in window
    filled: Mapping[str, int] = field(default_factory=dict)  # camera -> stand-in frames used
    period_ns: int | None = None  # measured key camera period
    phases_ns: Mapping[str, int | None] = field(default_factory=dict)  # camera -> phase in use
    phase_spread_ns: Mapping[str, int] = field(default_factory=dict)  # measured cameras only

    @property
    def total_dropped(self) -> int:
        """Sum over all drop reasons."""
        return sum(self.drops.values())


class _Camera(Generic[T]):
    """Per-camera state: frames in stamp order, newest stamp, phase."""

    def __init__(self, phase_ns: int | None) -> None:
        self.frames: list[Frame[T]] = []
        self.stamps: list[int] = []  # the frames' stamps, for bisect
        self.newest: int | None = None
        self.recent: collections.deque[int] = collections.deque(maxlen=17)  # period, phase
        self.phase: int | None = phase_ns
        self.measured = phase_ns is None  # phase measured from the streams (not configured)
        self.logged: int | None = None  # phase last reported in the log
        self.period: int | None = None  # the camera's own frame period, last measured

    def insert(self, frame: Frame[T]) -> None:
        i = bisect.bisect_left(self.stamps, frame.stamp_ns)
        self.stamps.insert(i, frame.stamp_ns)
        self.frames.insert(i, frame)
        if len(self.frames) > _BUFFER:
            del self.frames[0], self.stamps[0]

    def evict_before(self, stamp_ns: int) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i:
            del self.frames[:i], self.stamps[:i]

    def nearest(self, target_ns: int, tolerance_ns: int) -> Frame[T] | None:
        """The frame nearest `target` within `tolerance` (the earlier one on a tie)."""
        i = bisect.bisect_left(self.stamps, target_ns - tolerance_ns)
        best: Frame[T] | None = None
        while i < len(self.stamps) and self.stamps[i] <= target_ns + tolerance_ns:
            if best is None or abs(self.stamps[i] - target_ns) < abs(best.stamp_ns - target_ns):
                best = self.frames[i]
            i += 1
        return best


class BundleSynchronizer(Generic[T]):
    """Groups frames of N named cameras into bundles of one trigger cycle of the key camera.

    Thread-safe: `add` may be called concurrently from several executor threads.
    """

    def __init__(self, cfg: SyncConfig, *, on_reset: Callable[[int], None] | None = None) -> None:
        """on_reset(stamp_ns): called (outside the lock) after time went backwards."""
        self.cfg = cfg
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._cams: dict[str, _Camera[T]] = {}
        self._kept_period: int | None = None
        self._keys: list[Frame[T]] = []  # undecided bundles' key frames, stamp order
        self._key_stamps: collections.deque[int] = collections.deque(maxlen=_BUFFER)
        self._last_key: int | None = None  # newest key stamp decided (bundle emitted / dropped)
        self._frames = 0
        self._emitted = 0
        self._resets = 0
        self._drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self._missing: collections.Counter[str] = collections.Counter()
        self._filled: collections.Counter[str] = collections.Counter()
        self._spread: dict[str, int] = {}
        self._init_cameras()

    @property
    def cameras(self) -> tuple[str, ...]:
        """(N,) camera names; index 0 is the key camera."""
        return self.cfg.cameras

    def _init_cameras(self, keep_timing: bool = False) -> None:
        """Fresh per-camera state; `keep_timing` (a time reset: the rig is the same) keeps the
        measured phases and periods, so a short looping recording is bundled at once."""
        offsets = self.cfg.offsets_ns
        old = self._cams
        self._cams = {
            name: _Camera(0 if i == 0 else (offsets[i] if offsets is not None else None))
            for i, name in enumerate(self.cfg.cameras)
        }
        if keep_timing:
            for name, cam in self._cams.items():
                cam.phase, cam.logged, cam.period = (
                    old[name].phase,
                    old[name].logged,
                    old[name].period,
                )
            self._kept_period = self._period()
        else:
            self._kept_period = None
            self._spread = {}
        self._key_stamps.clear()
        self._keys.clear()
        self._last_key = None

    # -- input ---------------------------------------------------------------------------------

    def add(self, camera: str, stamp_ns: int, payload: T) -> list[Bundle[T]]:
        """Buffer one frame; return the bundles it decides (emitted ones, oldest first)."""
        reset_at: int | None = None
        with self._lock:
            self._frames += 1
            cam = self._cams.get(camera)
            if cam is None:
                self._drops[DropReason.UNKNOWN_CAMERA] += 1
                return []
            if cam.newest is not None and stamp_ns < cam.newest - self.cfg.jump_back_ns:
                self._reset_locked()
                reset_at = stamp_ns
                cam = self._cams[camera]
            if stamp_ns in cam.stamps or stamp_ns == cam.newest:
                self._drops[DropReason.DUPLICATE_STAMP] += 1
                return []
            frame = Frame(camera, stamp_ns, payload)
            out = self._add_locked(cam, frame)
        if reset_at is not None:
            _LOG.warning("camera %s stamp went backwards to %d ns: sync reset", camera, reset_at)
            if self._on_reset is not None:
                self._on_reset(reset_at)
        return out

    def flush(self) -> list[Bundle[T]]:
        """The input has ended: decide every pending bundle with the frames that are here.

        A camera whose phase could not be measured yet (a recording of a few frames) gets it
        from whatever frames it sent."""
        with self._lock:
            self._measure_phases(final=True)
            return self._decide_pending(final=True)

    def reset(self) -> None:
        """Forget all buffered frames, pending bundles and measured phases."""
        with self._lock:
            self._drops[DropReason.TIME_BACKWARDS] += len(self._keys)
            self._resets += 1
            self._init_cameras()

    def stats(self) -> SyncStats:
        """Frozen snapshot of the counters and the timing in use."""
        with self._lock:
            return SyncStats(
                frames_received=self._frames,
                bundles_emitted=self._emitted,
                resets=self._resets,
                drops=MappingProxyType(dict(self._drops)),
                missing=MappingProxyType(dict(self._missing)),
                filled=MappingProxyType(dict(self._filled)),
                period_ns=self._period(),
                phases_ns=MappingProxyType({n: c.phase for n, c in self._cams.items()}),
                phase_spread_ns=MappingProxyType(dict(self._spread)),
            )

    # -- internals (lock held) -----------------------------------------------------------------

    def _reset_locked(self) -> None:
        self._drops[DropReason.TIME_BACKWARDS] += len(self._keys)
        self._resets += 1
        self._init_cameras(keep_timing=True)

    def _period(self) -> int | None:
        """The key camera's period: measured, else the one kept over a time reset."""
        return median_period_ns(list(self._key_stamps)) or self._kept_period

    def _add_locked(self, cam: _Camera[T], frame: Frame[T]) -> list[Bundle[T]]:
        stamp = frame.stamp_ns
        if frame.camera == self.cfg.cameras[0]:
            if self._last_key is not None and stamp <= self._last_key:
                self._drops[DropReason.LATE] += 1  # its bundle was decided already
                return []
            self._key_stamps.append(stamp)
            bisect.insort(self._keys, frame, key=lambda f: f.stamp_ns)
        else:
            last = self._last_key
            if (
                cam.phase is not None
                and last is not None
                and stamp - cam.phase <= last + (self.cfg.tolerance_ns)
            ):
                self._drops[DropReason.LATE] += 1  # belongs to a cycle decided already
                return []
            cam.insert(frame)
            cam.recent.append(stamp)
            cam.period = median_period_ns(list(cam.recent)) or cam.period
        cam.newest = stamp if cam.newest is None else max(cam.newest, stamp)
        self._measure_phases()
        out = self._decide_pending(final=False)
        self._evict()
        return out

    def _evict(self) -> None:
        """Drop frames that can belong to no undecided or future bundle."""
        if self._keys:
            ref = self._keys[0].stamp_ns
        elif self._last_key is not None:
            ref = self._last_key + 1
        else:
            return
        for cam in list(self._cams.values())[1:]:
            if cam.phase is not None:
                cam.evict_before(ref + cam.phase - self.cfg.fill_tolerance_ns)

    def _measure_phases(self, *, final: bool = False) -> None:
        """Measure (and keep measuring: a phase can drift) each unconfigured camera's phase."""
        keys = list(self._key_stamps)
        period = self._period()
        if period is None and final and keys:
            period = keys[-1] - keys[0] if len(keys) == 2 else 4 * self.cfg.timeout_ns
        if period is None:
            return
        key = self.cfg.cameras[0]
        for name, cam in self._cams.items():
            if not cam.measured or name == key:
                continue
            est = estimate_phase(
                keys,
                cam.recent,
                period,
                self.cfg.phase_samples,
                between_keys=not final,
                near=cam.phase,
                within_ns=self.cfg.tolerance_ns,
            )
            if est is not None:
                cam.phase = est.phase_ns
                self._spread[name] = est.spread_ns
        known = {n: c.phase for n, c in self._cams.items() if c.phase is not None}
        for name, phase in unwrap_cycle(known, key, period).items():
            cam = self._cams[name]
            if not cam.measured or name == key:
                continue
            cam.phase = phase
            if cam.logged is None or abs(cam.logged - phase) > self.cfg.tolerance_ns // 2:
                cam.logged = phase
                _LOG.info(
                    "camera %s: trigger phase %+.1f ms after %s (period %.1f ms)",
                    name,
                    phase / 1e6,
                    key,
                    period / 1e6,
                )

    def _decide_pending(self, *, final: bool) -> list[Bundle[T]]:
        """Decide pending bundles in key order, up to the first undecided one (all if final)."""
        out: list[Bundle[T]] = []
        while len(self._keys) > self.cfg.max_pending:
            self._last_key = self._keys.pop(0).stamp_ns
            self._drops[DropReason.OVERFLOW] += 1
        while self._keys:
            frames = self._decide_locked(self._keys[0], final=final)
            if frames is None:
                break
            key = self._keys.pop(0)
            self._last_key = key.stamp_ns
            bundle = self._complete(key, frames)
            if bundle is not None:
                out.append(bundle)
        return out

    def _unique_in_window(self, cam: _Camera[T]) -> bool:
        """True when the camera cannot deliver two frames within one tolerance window."""
        return cam.period is not None and cam.period > 2 * self.cfg.tolerance_ns

    def _decide_locked(self, key: Frame[T], *, final: bool) -> list[Frame[T] | None] | None:
        """Each camera's frame of the key's cycle (None: missing) once all are decided."""
        cfg = self.cfg
        k = key.stamp_ns
        newest_key = self._key_stamps[-1] if self._key_stamps else k
        period = self._period()
        frames: list[Frame[T] | None] = [key]
        for name in cfg.cameras[1:]:
            cam = self._cams[name]
            if cam.phase is None:  # not measured yet: wait while a measurement can come
                warmup = (cfg.phase_samples + 2) * (period or cfg.timeout_ns)
                if not final and newest_key <= k + warmup + cfg.timeout_ns:
                    return None
                frames.append(None)
                continue
            expected = k + cam.phase
            hit = cam.nearest(expected, cfg.tolerance_ns)
            newest = cam.newest
            if hit is not None:
                settled = newest is not None and newest >= expected
                if final or settled or self._unique_in_window(cam):
                    frames.append(hit)
                    continue
                return None
            passed = newest is not None and newest > expected + cfg.tolerance_ns
            timed_out = newest_key > expected + cfg.tolerance_ns + cfg.timeout_ns
            if not (final or passed or timed_out):
                return None
            frames.append(None)
        return frames

    def _complete(self, key: Frame[T], frames: list[Frame[T] | None]) -> Bundle[T] | None:
        missing = [n for n, f in zip(self.cfg.cameras, frames, strict=True) if f is None]
        for name in missing:
            self._missing[name] += 1
        if missing and self.cfg.missing is MissingRule.FILL:
            for i, name in enumerate(self.cfg.cameras):
                cam = self._cams[name]
                if frames[i] is None and cam.phase is not None:
                    frames[i] = cam.nearest(key.stamp_ns + cam.phase, self.cfg.fill_tolerance_ns)
            if all(f is not None for f in frames):
                for name in missing:
                    self._filled[name] += 1
                self._emitted += 1
                return Bundle(key.stamp_ns, tuple(f for f in frames if f), tuple(missing))
        if missing:
            self._drops[DropReason.MISSING] += 1
            return None
        self._emitted += 1
        return Bundle(key.stamp_ns, tuple(f for f in frames if f))


def describe_phases(stats: SyncStats) -> dict[str, Any]:
    """Plain values for diagnostics: period and each camera's phase in milliseconds."""
    out: dict[str, Any] = {"period_ms": None if stats.period_ns is None else stats.period_ns / 1e6}
    for name, phase in stats.phases_ns.items():
        out[name] = None if phase is None else phase / 1e6
    return out
