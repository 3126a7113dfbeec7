"""A triggered camera rig as streams of stamps, and the bundles it should give (test support).
In: rate, trigger phases, jitter, drops, silences. Out: frames with their true trigger cycle,
arrival orders with bounded latency, and a brute-force reference of the bundles.

The reference knows each frame's cycle by construction, so it needs none of the synchroniser's
reasoning: a cycle whose key frame and every camera's frame exist is one bundle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

MS = 1_000_000


@dataclass(frozen=True)
class RigFrame:
    """One frame of the simulated rig."""

    camera: str
    stamp_ns: int
    cycle: int  # trigger cycle of the key camera it belongs to
    loop: int = 0  # pass over the recording (bag loops)


@dataclass
class Rig:
    """A triggered rig: camera 0 is the key camera."""

    cameras: tuple[str, ...]
    period_ns: int
    phases_ns: tuple[int, ...]  # (N,) trigger offsets from the key camera, key first = 0
    jitter_ns: int = 0  # each stamp within +- jitter of its trigger time
    t0_ns: int = 1_700_000_000 * 10**9
    dropped: set[tuple[int, int]] = field(default_factory=set)  # (cycle, camera index)

    def frames(self, cycles: int, rng: random.Random, loop: int = 0) -> list[RigFrame]:
        """Every frame that exists, in stamp order."""
        out = []
        for c in range(cycles):
            base = self.t0_ns + c * self.period_ns
            for i, name in enumerate(self.cameras):
                if (c, i) in self.dropped:
                    continue
                j = rng.randint(-self.jitter_ns, self.jitter_ns) if self.jitter_ns else 0
                out.append(RigFrame(name, base + self.phases_ns[i] + j, c, loop))
        return sorted(out, key=lambda f: f.stamp_ns)


def arrival_order(
    frames: Sequence[RigFrame], rng: random.Random, max_latency_ns: int
) -> list[RigFrame]:
    """Frames as a subscriber might receive them: each topic in stamp order, topics interleaved
    by a random latency of up to `max_latency_ns` per message."""
    arrive: dict[str, int] = {}
    keyed = []
    for f in sorted(frames, key=lambda f: (f.loop, f.stamp_ns)):
        t = f.stamp_ns + rng.randint(0, max_latency_ns)
        t = max(t, arrive.get(f.camera, t))  # one topic keeps its order
        arrive[f.camera] = t
        keyed.append((f.loop, t, f))
    return [f for _, _, f in sorted(keyed, key=lambda x: (x[0], x[1]))]


def reference_bundles(
    frames: Sequence[RigFrame], cameras: Sequence[str]
) -> dict[tuple[int, int], tuple[int, ...]]:
    """(loop, cycle) -> frame stamps in camera order, for every cycle with all N frames."""
    by_cycle: dict[tuple[int, int], dict[str, int]] = {}
    for f in frames:
        by_cycle.setdefault((f.loop, f.cycle), {})[f.camera] = f.stamp_ns
    return {
        k: tuple(v[c] for c in cameras)
        for k, v in by_cycle.items()
        if all(c in v for c in cameras)
    }
