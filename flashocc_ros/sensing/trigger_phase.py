"""Trigger phase of each camera measured from the streams: its usual offset from the key camera.
In: header stamps (ns) of the key camera and of one other camera. Out: period and phase (ns).

On a triggered rig every camera fires once per cycle of the key camera, a fixed time after it
(nuScenes: 0, 8, 17, 25, 33, 42 ms). The phase of a camera is that offset, taken in
[-period/2, period/2): a camera firing 42 ms after the key camera of a 12 Hz rig has phase +42 ms,
and its frame of key cycle k is the one nearest `key stamp + phase`, although its previous frame
lies only 41 ms before the key stamp.

A phase measured near half a period is ambiguous (the camera may fire just after the key camera's
trigger or just before the next one): `unwrap_cycle` resolves it with the rig, by taking the
cycle as the rig's contiguous trigger sweep, i.e. cutting the circle of all cameras' phases at its
largest gap (nuScenes: 0 .. 42 ms of an 83 ms period, so +42 ms, not -41 ms).

The estimate is a circular mean of the camera's offsets from the nearest key stamp, wrapped by the
key period, over its latest frames that have key stamps on both sides. Which frames qualify
depends only on the stamps, not on the order in which the two streams arrive.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def median_period_ns(stamps: Sequence[int]) -> int | None:
    """Lower median of the differences of consecutive sorted stamps (ns); None with fewer than
    2 stamps.

    A dropped frame makes one difference of two periods; the lower median ignores it while at
    least half the differences are single periods (two stamps around a drop give twice the
    period: still enough to wrap phases of a staggered rig).
    """
    if len(stamps) < 2:
        return None
    ordered = sorted(stamps)
    diffs = [b - a for a, b in itertools.pairwise(ordered) if b > a]
    return int(statistics.median_low(diffs)) if diffs else None


def wrap_offset(offset_ns: float, period_ns: int) -> float:
    """`offset` wrapped into [-period/2, period/2)."""
    return offset_ns - period_ns * math.floor(offset_ns / period_ns + 0.5)


@dataclass(frozen=True)
class PhaseEstimate:
    """A measured trigger phase and how well the samples agree with it."""

    phase_ns: int  # offset from the key camera's stamp, in [-period/2, period/2)
    spread_ns: int  # largest |sample offset - phase|: trigger jitter plus key jitter
    samples: int  # frames it was measured from


def estimate_phase(
    key_stamps: Sequence[int],
    stamps: Sequence[int],
    period_ns: int,
    samples: int = 1,
    *,
    latest: int = 16,
    between_keys: bool = True,
    near: int | None = None,
    within_ns: int = 0,
) -> PhaseEstimate | None:
    """Phase of a camera from its `stamps` against `key_stamps` (both any order, ns).

    Uses the latest `latest` stamps that lie between the first and the last key stamp (with
    `between_keys` False: any stamp, for a recording too short to measure properly); None while
    fewer than `samples` qualify or without a period. `near` (a current estimate) with
    `within_ns`: offsets further than that from it are left out (a frame whose own key frame
    is missing is measured against another cycle's key frame).
    """
    if period_ns <= 0 or not key_stamps:
        return None
    keys = sorted(key_stamps)
    lo, hi = (keys[0], keys[-1]) if between_keys else (-(2**62), 2**62)
    chosen = [s for s in sorted(stamps) if lo <= s <= hi][-latest:]
    if len(chosen) < max(1, samples):
        return None
    offsets = []
    j = 0
    for s in chosen:  # nearest key stamp by a merge walk over the two sorted lists
        while j + 1 < len(keys) and keys[j + 1] <= s:
            j += 1
        nearest = keys[j] if j + 1 == len(keys) or s - keys[j] <= keys[j + 1] - s else keys[j + 1]
        offset = wrap_offset(s - nearest, period_ns)
        if near is None or abs(wrap_offset(offset - near, period_ns)) <= within_ns:
            offsets.append(offset)
    if not offsets:
        return None
    angle = [2.0 * math.pi * o / period_ns for o in offsets]
    mean = math.atan2(sum(map(math.sin, angle)), sum(map(math.cos, angle)))
    phase = wrap_offset(mean / (2.0 * math.pi) * period_ns, period_ns)
    spread = max(abs(wrap_offset(o - phase, period_ns)) for o in offsets)
    return PhaseEstimate(round(phase), round(spread), len(chosen))


def unwrap_cycle(phases: dict[str, int], key: str, period_ns: int) -> dict[str, int]:
    """Phases (any wrap) -> offsets from the key camera along the rig's trigger sweep.

    The phases are points on a circle of one period; the sweep is the arc that leaves out the
    largest gap between neighbouring points, and each camera's offset is its distance from the
    key camera along that arc (negative before it). With two cameras this is the wrap into
    [-period/2, period/2)."""
    if len(phases) < 2 or period_ns <= 0:
        return {name: round(wrap_offset(p, period_ns)) for name, p in phases.items()}
    on_circle = {name: (p - phases[key]) % period_ns for name, p in phases.items()}
    points = sorted(set(on_circle.values()))
    gaps = [
        ((points[(i + 1) % len(points)] - points[i]) % period_ns or period_ns, i)
        for i in range(len(points))
    ]
    _, i = max(gaps)  # the sweep starts after the largest gap
    start = points[(i + 1) % len(points)]
    key_pos = (0 - start) % period_ns
    return {name: round((v - start) % period_ns - key_pos) for name, v in on_circle.items()}
