"""Health of the node's inputs, outputs and processing, in ROS 2 diagnostics terms (ROS-free).
In: arrivals per input, grids out with their latency, faults by reason, the time. Out: `Status`
records (level OK / WARN / ERROR, a one-line message, key-value details) and a summary.

The same standard as diagnostic_updater's frequency and time-stamp checks, kept ROS-free so the
rules are unit-tested without a graph (the node turns each `Status` into a
diagnostic_msgs/DiagnosticStatus):

* an **input** (a camera's image or CameraInfo, /tf) is OK while messages come; WARN when the last
  one is older than `late_s`, when some of its frames were missing from their trigger cycle or
  refused within the last `recovery_s`; ERROR when nothing came for `missing_s` (or never did:
  the message says why, when the node can tell: no publisher, another type, incompatible QoS).
  Inputs that may be published once (/tf_static, CameraInfo) only need one message;
* the **output** is WARN when inputs arrive but no grid came out for `missing_s`, or when the
  latency (from the key camera's frame coming in to its grid going out: waiting for the other
  cameras and /tf, decoding, the network, publishing) exceeds `latency_warn_s`;
* **processing** is WARN while any fault (a failed or refused bundle) happened within `recovery_s`;
* the **summary** is the worst of them, and returns to OK only once everything has been OK for
  `recovery_s` (so a flapping input is not reported healthy between two faults).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class Status:
    """One diagnostic status."""

    name: str  # e.g. "flashocc: input CAM_FRONT image"
    level: Level
    message: str  # one line a user can act on
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds, seconds."""

    late_s: float = 1.0  # an input's last message older than this: WARN
    missing_s: float = 3.0  # ... older than this (or none since start): ERROR
    recovery_s: float = 3.0  # faults count this long; the summary needs this long of OK
    window_s: float = 5.0  # rates are averaged over this window
    latency_warn_s: float = 1.0  # end-to-end latency above this: WARN


class _Events:
    """Times of recent events (for rates and windows), bounded."""

    def __init__(self, keep: int = 512) -> None:
        self.times: collections.deque[float] = collections.deque(maxlen=keep)

    def add(self, now: float) -> None:
        self.times.append(now)

    def count_since(self, since: float) -> int:
        return sum(1 for t in self.times if t >= since)

    def rate(self, now: float, window: float) -> float:
        """Events per second over the last `window` seconds (0 with fewer than two)."""
        recent = [t for t in self.times if t >= now - window]
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1] - recent[0], 1e-9)
        return (len(recent) - 1) / span


class InputMonitor:
    """One input topic: when messages arrive, and what went wrong with them lately."""

    def __init__(self, label: str, topic: str, type_name: str, once: bool = False) -> None:
        """label: e.g. 'CAM_FRONT image'; topic: the resolved topic name; type_name: e.g.
        'sensor_msgs/msg/Image'; once: one message is enough (/tf_static, a CameraInfo that a
        driver publishes once): no late / missing by age after the first."""
        self.label, self.topic, self.type_name = label, topic, type_name
        self.once = once
        self.count = 0
        self.last: float | None = None
        self._arrivals = _Events()
        self._missing = _Events()  # frames missing from their trigger cycle
        self._refused = _Events()
        self.last_refusal = ""

    def arrived(self, now: float) -> None:
        self.count += 1
        self.last = now
        self._arrivals.add(now)

    def missing_frame(self, now: float) -> None:
        self._missing.add(now)

    def refused(self, now: float, why: str) -> None:
        self._refused.add(now)
        self.last_refusal = why

    def status(
        self, now: float, started: float, cfg: HealthConfig, cause: Callable[[], str] | None
    ) -> Status:
        """This input's status at `now` (`started`: when the node began listening)."""
        name = f"flashocc: input {self.label}"
        rate = self._arrivals.rate(now, cfg.window_s)
        values = [
            ("topic", self.topic),
            ("type", self.type_name),
            ("messages", str(self.count)),
            ("rate_hz", f"{rate:.2f}"),
            ("age_s", "never" if self.last is None else f"{now - self.last:.2f}"),
        ]
        missing = self._missing.count_since(now - cfg.recovery_s)
        refused = self._refused.count_since(now - cfg.recovery_s)
        values += [("missing_frames_recent", str(missing)), ("refused_recent", str(refused))]
        where = f"{self.topic} ({self.type_name})"
        if self.last is None:
            waited = now - started
            why = cause() if cause is not None and waited >= cfg.late_s else ""
            text = f"nothing received on {where} for {waited:.1f} s" + (f": {why}" if why else "")
            if waited >= cfg.missing_s:
                return Status(name, Level.ERROR, text, tuple(values))
            if waited >= cfg.late_s:
                return Status(name, Level.WARN, text, tuple(values))
            return Status(name, Level.OK, f"waiting for the first message on {where}",
                          tuple(values))  # fmt: skip
        age = now - self.last
        if self.once:
            age = 0.0
        if age >= cfg.missing_s:
            return Status(name, Level.ERROR, f"missing: last message {age:.1f} s ago on {where}",
                          tuple(values))  # fmt: skip
        if age >= cfg.late_s:
            return Status(name, Level.WARN, f"late: last message {age:.1f} s ago on {where}",
                          tuple(values))  # fmt: skip
        if refused:
            return Status(name, Level.WARN, f"refused {refused} message(s): {self.last_refusal}",
                          tuple(values))  # fmt: skip
        if missing:
            return Status(
                name,
                Level.WARN,
                f"dropping: {missing} frame(s) missing from their trigger cycle in the last "
                f"{cfg.recovery_s:.0f} s",
                tuple(values),
            )
        return Status(name, Level.OK, f"{rate:.1f} Hz", tuple(values))


class FaultWindow:
    """Faults by reason; a reason is active for `recovery_s` after its latest occurrence."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._last: dict[str, tuple[float, str]] = {}  # reason -> (time, text)

    def record(self, now: float, reason: str, text: str) -> None:
        self.counts[reason] += 1
        self._last[reason] = (now, text)

    def active(self, now: float, recovery_s: float) -> dict[str, str]:
        """reason -> latest text, for the reasons seen within `recovery_s`."""
        return {r: text for r, (t, text) in self._last.items() if now - t < recovery_s}


@dataclass
class OutputMonitor:
    """Grids out: when, and how old (publish time minus stamp)."""

    count: int = 0
    last: float | None = None
    latency_s: float | None = None  # of the latest grid: key frame received -> grid published
    _events: _Events = field(default_factory=_Events)

    def published(self, now: float, latency_s: float) -> None:
        self.count += 1
        self.last = now
        self.latency_s = latency_s
        self._events.add(now)

    def status(self, now: float, started: float, cfg: HealthConfig, inputs_flow: bool) -> Status:
        rate = self._events.rate(now, cfg.window_s)
        values = (
            ("grids", str(self.count)),
            ("rate_hz", f"{rate:.2f}"),
            ("latency_s", "none" if self.latency_s is None else f"{self.latency_s:.3f}"),
        )
        name = "flashocc: output"
        since = now - (self.last if self.last is not None else started)
        if inputs_flow and since >= cfg.missing_s:
            what = "no grid yet" if self.last is None else f"no grid for {since:.1f} s"
            return Status(name, Level.WARN, f"{what} while inputs arrive", values)
        if (
            self.latency_s is not None
            and self.latency_s > cfg.latency_warn_s
            and since < cfg.late_s
        ):
            return Status(
                name,
                Level.WARN,
                f"latency {self.latency_s:.2f} s (key frame in -> grid out) above "
                f"{cfg.latency_warn_s:.2f} s",
                values,
            )
        return Status(name, Level.OK, f"{rate:.1f} grids/s", values)


class Summary:
    """The worst level of all statuses, held until everything has been OK for `recovery_s`."""

    def __init__(self) -> None:
        self._last_bad: float | None = None  # last time anything was not OK
        self._held = Level.OK
        self._held_message = ""

    def update(self, now: float, statuses: Sequence[Status], recovery_s: float) -> Status:
        name = "flashocc: summary"
        worst = max((s.level for s in statuses), default=Level.OK)
        if worst != Level.OK:
            bad = [s for s in statuses if s.level == worst]
            self._last_bad, self._held = now, worst
            self._held_message = "; ".join(
                f"{s.name.removeprefix('flashocc: ')}: {s.message}" for s in bad
            )
            return Status(name, worst, self._held_message[:400])
        if self._last_bad is not None and now - self._last_bad < recovery_s:
            return Status(
                name,
                self._held,
                f"recovering ({now - self._last_bad:.1f} s of {recovery_s:.1f} s all OK) from "
                f"{self._held_message}"[:400],
            )
        self._last_bad, self._held, self._held_message = None, Level.OK, ""
        return Status(name, Level.OK, "ok")


class ThrottledLog:
    """Decides, per reason, whether a log line is due: at most one per `interval_s` per reason,
    so a second, different fault is never hidden behind the first."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self.suppressed: collections.Counter[str] = collections.Counter()

    def due(self, reason: str, now: float) -> bool:
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self.suppressed[reason] += 1
            return False
        self._last[reason] = now
        return True


def silent_inputs(monitors: Iterable[InputMonitor]) -> list[InputMonitor]:
    """The inputs that never received anything."""
    return [m for m in monitors if m.last is None]


@dataclass(frozen=True)
class InputSpec:
    """One input of the node: key ('<camera>.image', '<camera>.camera_info', 'tf', 'tf_static'),
    a label for its status name, the topic it arrives on and its message type."""

    key: str
    label: str
    topic: str
    type_name: str
    once: bool = False  # one message is enough (latched)


class HealthBoard:
    """Every monitor of one node, the events that feed them, and its statuses."""

    def __init__(self, cfg: HealthConfig, inputs: Sequence[InputSpec], started: float) -> None:
        self.cfg, self.started = cfg, started
        self.inputs = {i.key: InputMonitor(i.label, i.topic, i.type_name, i.once) for i in inputs}
        self.faults = FaultWindow()
        self.output = OutputMonitor()
        self.summary = Summary()
        self.logs = ThrottledLog(5.0)
        self._missing_seen: dict[str, int] = {}

    def arrived(self, key: str, now: float) -> None:
        if key in self.inputs:
            self.inputs[key].arrived(now)

    def refused(self, key: str, now: float, why: str) -> bool:
        """Record a refused message; True when a log line for it is due (per input)."""
        if key in self.inputs:
            self.inputs[key].refused(now, why)
        self.faults.record(now, f"refused.{key}", why)
        return self.logs.due(f"refused.{key}", now)

    def fault(self, now: float, reason: str, text: str) -> bool:
        """Record a processing fault; True when a log line for this reason is due."""
        self.faults.record(now, reason, text)
        return self.logs.due(reason, now)

    def missing_frames(self, totals: dict[str, int], now: float) -> None:
        """Cumulative frames missing from their cycle, per camera (synchroniser counters)."""
        for camera, total in totals.items():
            new = total - self._missing_seen.get(camera, 0)
            self._missing_seen[camera] = total
            monitor = self.inputs.get(f"{camera}.image")
            for _ in range(max(0, min(new, 64))):
                if monitor is not None:
                    monitor.missing_frame(now)

    def published(self, now: float, latency_s: float) -> None:
        self.output.published(now, latency_s)

    def silent(self) -> list[InputMonitor]:
        return silent_inputs(self.inputs.values())

    def statuses(self, now: float, cause: Callable[[str], str] | None = None) -> list[Status]:
        """Summary first, then processing, output and every input."""
        cfg = self.cfg
        inputs = [
            m.status(now, self.started, cfg, _bind(cause, k)) for k, m in self.inputs.items()
        ]
        flowing = any(
            m.last is not None and now - m.last < cfg.late_s for m in self.inputs.values()
        )
        output = self.output.status(now, self.started, cfg, flowing)
        active = self.faults.active(now, cfg.recovery_s)
        processing = Status(
            "flashocc: processing",
            Level.WARN if active else Level.OK,
            "; ".join(sorted(set(active.values())))[:400] if active else "ok",
        )
        parts = [processing, output, *inputs]
        return [self.summary.update(now, parts, cfg.recovery_s), *parts]


def _bind(cause: Callable[[str], str] | None, key: str) -> Callable[[], str] | None:
    """`cause` for one input key (asked only when an input is silent)."""
    if cause is None:
        return None
    return lambda: cause(key)
