"""A ROS-free TF buffer with /tf (dynamic, time-cached) and /tf_static (never expiring) semantics.
In: (parent, child, stamp ns, translation xyz, quaternion xyzw) samples. Out: (4, 4) transforms.

`lookup(target, source, stamp)` returns the homogeneous matrix ``T_target<-source`` (it maps
points expressed in `source` into `target`), composed along the tree through the common ancestor.
Dynamic links are interpolated at the stamp between the samples on both sides (linear
translation, quaternion slerp), as tf2's buffer does, and a stamp outside a link's samples
raises, as in tf2. A sample is never held: a caller that accepts extrapolation asks for it
explicitly (`extrapolate_ns`), and gets the motion of the link's two nearest samples carried on
at constant velocity, for at most that long. Each child has one parent (a tree, as in tf2); a
frame keeps the first parent it was given (tf2 would switch to a new one: here a transform that
re-parents a frame or closes a loop is refused, so one stray message cannot cut a camera off its
vehicle). Thread-safe.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_LOG = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


class TransformError(LookupError):
    """A transform cannot be looked up (base class of the specific errors below)."""


class UnknownFrameError(TransformError):
    """A frame id was never seen in any transform."""


class ConnectivityError(TransformError):
    """Both frames exist but lie in different trees."""


class ExtrapolationError(TransformError):
    """The requested stamp lies outside the cached samples of a dynamic link (beyond tolerance)."""


def quaternion_to_matrix(q: Sequence[float] | F64) -> F64:
    """(4,) quaternion x, y, z, w (any norm > 0) -> (3, 3) rotation matrix."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    if not n > 1e-12 or not math.isfinite(n):
        raise ValueError(f"quaternion {tuple(q)} has no valid norm")
    s = 2.0 / n
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(r: Sequence[Sequence[float]] | F64) -> tuple[float, float, float, float]:
    """(3, 3) rotation matrix -> unit quaternion (x, y, z, w) with w >= 0.

    Computed from the largest of the four diagonal combinations (well conditioned for every
    rotation, 180-degree turns included)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    cands = (tr, m[0, 0], m[1, 1], m[2, 2])
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif i == 1:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif i == 2:
        s = 2.0 * math.sqrt(1.0 - m[0, 0] + m[1, 1] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 - m[0, 0] - m[1, 1] + m[2, 2])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    v = np.asarray(q) / np.linalg.norm(q)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


def transform_matrix(translation: Sequence[float] | F64, rotation: Sequence[float] | F64) -> F64:
    """translation (3,) and quaternion xyzw (4,) -> (4, 4) homogeneous matrix parent <- child."""
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(rotation)
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def invert_transform(m: F64) -> F64:
    """(4, 4) rigid transform -> its inverse (R^T, -R^T t)."""
    inv = np.eye(4)
    rt = m[:3, :3].T
    inv[:3, :3] = rt
    inv[:3, 3] = -rt @ m[:3, 3]
    return inv


def slerp(q0: F64, q1: F64, alpha: float) -> F64:
    """Slerp of unit quaternions (4,) xyzw along the shorter arc -> (4,); alpha in [0, 1]
    interpolates, outside it carries the rotation on along the same arc (extrapolation)."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # same rotation, shorter path
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is accurate and stable
        q = q0 + alpha * (q1 - q0)
        return np.asarray(q / np.linalg.norm(q), dtype=np.float64)
    theta = math.acos(min(dot, 1.0))
    sin_theta = math.sin(theta)
    w0 = math.sin((1.0 - alpha) * theta) / sin_theta
    w1 = math.sin(alpha * theta) / sin_theta
    return np.asarray(w0 * q0 + w1 * q1, dtype=np.float64)


def _normalise_frame(frame: str) -> str:
    return frame[1:] if frame.startswith("/") else frame


@dataclass
class _Link:
    """Samples of one parent <- child edge; static links hold exactly one sample."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[F64] = field(default_factory=list)
    rotations: list[F64] = field(default_factory=list)


class TfBuffer:
    """Stores parent <- child transforms and answers `lookup` for any two connected frames.

    Dynamic samples older than (newest sample of their link - cache_ns) are dropped. A sample
    more than `jump_back_ns` older than the newest of its link means time jumped backwards (bag
    loop, simulator reset): that link forgets its samples and starts again from it (counted in
    `jumps`), like tf2's buffer on a backward clock jump. `clear()` drops every dynamic sample;
    static links survive both.
    """

    def __init__(
        self,
        cache_ns: int = 10_000_000_000,
        *,
        max_samples_per_link: int = 10_000,
        jump_back_ns: int = 1_000_000_000,
    ) -> None:
        """cache_ns: how long dynamic samples are kept behind the newest one of their link;
        max_samples_per_link: hard memory cap per dynamic link (oldest dropped first);
        jump_back_ns: a sample this much older than its link's newest restarts the link.
        """
        if cache_ns <= 0 or max_samples_per_link < 2 or jump_back_ns <= 0:
            raise ValueError("need cache_ns > 0, max_samples_per_link >= 2, jump_back_ns > 0")
        self._jump = int(jump_back_ns)
        self.jumps = 0  # backward time jumps seen (links restarted)
        self.repeated = 0  # samples that replaced one of the same link and stamp
        self._cache = int(cache_ns)
        self._max = max_samples_per_link
        self._links: dict[str, _Link] = {}
        self._lock = threading.RLock()

    # -- writing -----------------------------------------------------------------------------

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: Sequence[float] | F64,
        rotation: Sequence[float] | F64,
        *,
        static: bool = False,
    ) -> None:
        """Add one sample parent <- child: translation (3,) m, quaternion (4,) xyzw (any norm)."""
        parent, child = _normalise_frame(parent), _normalise_frame(child)
        if not parent or not child or parent == child:
            raise ValueError(f"invalid frame ids parent={parent!r} child={child!r}")
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(rotation, dtype=np.float64).reshape(4)
        biggest = float(np.max(np.abs(q))) if np.all(np.isfinite(q)) else math.nan
        if not np.all(np.isfinite(t)) or not biggest > 1e-9:  # NaN fails the comparison
            raise ValueError(f"non-finite transform {parent} <- {child}: t={t}, q={q}")
        q = q / biggest  # scaled first: the norm of huge components would overflow
        q = q / float(np.linalg.norm(q))
        with self._lock:
            link = self._links.get(child)
            if link is not None and (link.parent != parent or link.static != static):
                raise ValueError(
                    f"frame {child!r} already has the {'static' if link.static else 'dynamic'} "
                    f"parent {link.parent!r}; a {'static' if static else 'dynamic'} transform "
                    f"from {parent!r} is refused (a frame has one parent)"
                )
            if link is None and child in self._chain(parent):
                raise ValueError(f"{parent!r} <- {child!r} would close a loop in the tree")
            if link is None:
                link = _Link(parent, static)
                self._links[child] = link
            if static:
                link.stamps, link.translations, link.rotations = [stamp_ns], [t], [q]
                return
            self._insert(link, stamp_ns, t, q)

    def _insert(self, link: _Link, stamp_ns: int, t: F64, q: F64) -> None:
        if link.stamps and stamp_ns < link.stamps[-1] - self._jump:
            link.stamps, link.translations, link.rotations = [], [], []  # time jumped back
            self.jumps += 1
        if link.stamps and stamp_ns < link.stamps[-1] - self._cache:
            return  # older than the cache window: useless
        i = bisect.bisect_left(link.stamps, stamp_ns)
        if i < len(link.stamps) and link.stamps[i] == stamp_ns:
            # Same stamp again: the new sample replaces it (tf2 keeps both, and then answers an
            # exact lookup with the newer one but interpolates with either).
            link.translations[i], link.rotations[i] = t, q
            self.repeated += 1
            return
        link.stamps.insert(i, stamp_ns)
        link.translations.insert(i, t)
        link.rotations.insert(i, q)
        cut = bisect.bisect_left(link.stamps, link.stamps[-1] - self._cache)
        cut = max(cut, len(link.stamps) - self._max)
        if cut > 0:
            del link.stamps[:cut], link.translations[:cut], link.rotations[:cut]

    def nearest_sample(
        self, parent: str, child: str, stamp_ns: int
    ) -> tuple[int, F64, F64] | None:
        """(stamp, translation (3,), quaternion (4,)) of the dynamic link parent <- child
        sample nearest `stamp_ns`; None when the link is unknown, static or has another parent."""
        parent, child = _normalise_frame(parent), _normalise_frame(child)
        with self._lock:
            link = self._links.get(child)
            if link is None or link.static or link.parent != parent or not link.stamps:
                return None
            i = bisect.bisect_left(link.stamps, stamp_ns)
            cands = [j for j in (i - 1, i) if 0 <= j < len(link.stamps)]
            j = min(cands, key=lambda j: abs(link.stamps[j] - stamp_ns))
            return link.stamps[j], link.translations[j], link.rotations[j]

    def restart_link(self, child: str) -> None:
        """Forget every sample of the dynamic link to `child` (an odometry reset)."""
        with self._lock:
            link = self._links.get(_normalise_frame(child))
            if link is not None and not link.static:
                link.stamps, link.translations, link.rotations = [], [], []

    def clear(self) -> None:
        """Drop all dynamic samples (e.g. after time went backwards); static links stay."""
        with self._lock:
            self._links = {c: lk for c, lk in self._links.items() if lk.static}

    # -- reading -----------------------------------------------------------------------------

    def frames(self) -> frozenset[str]:
        """All known frame ids."""
        with self._lock:
            return frozenset(self._links) | {lk.parent for lk in self._links.values()}

    def can_transform(
        self, target_frame: str, source_frame: str, stamp_ns: int, extrapolate_ns: int = 0
    ) -> bool:
        """True when `lookup` would succeed."""
        try:
            self.lookup(target_frame, source_frame, stamp_ns, extrapolate_ns)
        except TransformError:
            return False
        return True

    def lookup(
        self, target_frame: str, source_frame: str, stamp_ns: int, extrapolate_ns: int = 0
    ) -> F64:
        """(4, 4) float64 T_target<-source at `stamp_ns`; stamp 0 = latest common time.

        `extrapolate_ns` > 0 allows a stamp up to that far outside a dynamic link's samples
        (constant velocity from its two nearest samples). Raises UnknownFrameError,
        ConnectivityError or ExtrapolationError (all TransformError).
        """
        target, source = _normalise_frame(target_frame), _normalise_frame(source_frame)
        with self._lock:
            known = self.frames()
            for name in (target, source):
                if name not in known:
                    raise UnknownFrameError(
                        f"frame {name!r} does not exist (lookup {target!r} <- {source!r})"
                    )
            if target == source:
                return np.eye(4)
            up_s, up_t = self._chain(source), self._chain(target)
            ancestors_t = {f: i for i, f in enumerate(up_t)}
            common = next((f for f in up_s if f in ancestors_t), None)
            if common is None:
                raise ConnectivityError(
                    f"frames {target!r} and {source!r} are not connected "
                    f"(roots {up_t[-1]!r} and {up_s[-1]!r})"
                )
            path_s = up_s[: up_s.index(common)]  # children whose link leads up to common
            path_t = up_t[: ancestors_t[common]]
            if stamp_ns == 0:
                stamp_ns = self._latest_common(path_s + path_t)
            m_common_s = self._compose(path_s, stamp_ns, extrapolate_ns)
            m_common_t = self._compose(path_t, stamp_ns, extrapolate_ns)
        return invert_transform(m_common_t) @ m_common_s

    def _chain(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        chain = [frame]
        while chain[-1] in self._links:
            chain.append(self._links[chain[-1]].parent)
            if len(chain) > len(self._links) + 1:
                raise ConnectivityError(f"loop in the transform tree at {frame!r}")
        return chain

    def _latest_common(self, children: list[str]) -> int:
        dyn = [self._links[c].stamps[-1] for c in children if not self._links[c].static]
        return min(dyn) if dyn else 0

    def _compose(self, children: list[str], stamp_ns: int, extrapolate_ns: int) -> F64:
        """Product top <- child[0] along a chain of children (child[i+1] is parent of child[i])."""
        m = np.eye(4)
        for child in children:
            m = self._sample(child, stamp_ns, extrapolate_ns) @ m
        return m

    def _sample(self, child: str, stamp_ns: int, extrapolate_ns: int) -> F64:
        link = self._links[child]
        if link.static:
            return transform_matrix(link.translations[0], link.rotations[0])
        st = link.stamps
        i = bisect.bisect_left(st, stamp_ns)
        if i < len(st) and st[i] == stamp_ns:
            return transform_matrix(link.translations[i], link.rotations[i])
        if i == 0 or i == len(st):
            beyond = st[0] - stamp_ns if i == 0 else stamp_ns - st[-1]
            if beyond > extrapolate_ns or len(st) < 2:
                direction = "past" if i == 0 else "future"
                raise ExtrapolationError(
                    f"lookup of {link.parent!r} <- {child!r} at {stamp_ns} ns would extrapolate "
                    f"{beyond / 1e6:.1f} ms into the {direction}: samples cover "
                    f"[{st[0]}, {st[-1]}] ns (extrapolation allowed: "
                    f"{extrapolate_ns / 1e6:.1f} ms)"
                )
            i = 1 if i == 0 else len(st) - 1  # the two nearest samples, carried on
        t0, t1 = st[i - 1], st[i]
        alpha = (stamp_ns - t0) / (t1 - t0)
        tr = link.translations[i - 1] + alpha * (link.translations[i] - link.translations[i - 1])
        return transform_matrix(tr, slerp(link.rotations[i - 1], link.rotations[i], alpha))
