"""Trigger-cycle synchroniser against a brute-force reference, and its rules one by one.
In: simulated rigs (rates, phases, jitter, drops, silences, duplicates, latency, loops).
Out: pass/fail.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rig_streams import MS, Rig, RigFrame, arrival_order, reference_bundles

from flashocc_ros.sensing.sync import (
    Bundle,
    BundleSynchronizer,
    DropReason,
    MissingRule,
    SyncConfig,
)
from flashocc_ros.sensing.trigger_phase import (
    estimate_phase,
    median_period_ns,
    unwrap_cycle,
    wrap_offset,
)

NUSC = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
NUSC_PHASES = (0, 8 * MS, 17 * MS, 25 * MS, 33 * MS, 42 * MS)
PERIOD_12HZ = 83_333_333


def run(sync: BundleSynchronizer[RigFrame], frames: list[RigFrame]) -> list[Bundle[RigFrame]]:
    out: list[Bundle[RigFrame]] = []
    for f in frames:
        out += sync.add(f.camera, f.stamp_ns, f)
    return out


def stamps(bundles: list[Bundle[RigFrame]]) -> list[tuple[int, ...]]:
    return [b.stamps_ns for b in bundles]


def cycles(bundles: list[Bundle[RigFrame]]) -> list[tuple[int, int]]:
    """(loop, cycle) of each bundle; every frame of a bundle must share it."""
    out = []
    for b in bundles:
        tags = {(f.payload.loop, f.payload.cycle) for f in b.frames}
        assert len(tags) == 1, f"bundle {b.stamp_ns} mixes cycles {sorted(tags)}"
        out.append(tags.pop())
    return out


# --- the rig -----------------------------------------------------------------------------
def test_nuscenes_rig_never_takes_the_previous_cycle_after_a_drop() -> None:
    """12 Hz, cameras 8-42 ms after the key camera: after one missing frame of the key camera,
    the next bundle takes each camera's own frame, not the one 41-66 ms before the key stamp."""
    rig = Rig(NUSC, PERIOD_12HZ, NUSC_PHASES, jitter_ns=3 * MS, dropped={(5, 0), (9, 3)})
    frames = rig.frames(30, random.Random(1))
    for offsets in (NUSC_PHASES, None):
        sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(
            SyncConfig(NUSC, offsets_ns=offsets)
        )
        got = run(sync, arrival_order(frames, random.Random(2), 30 * MS))
        ref = reference_bundles(frames, NUSC)
        assert cycles(got) == sorted(ref), offsets
        assert stamps(got) == [ref[k] for k in sorted(ref)]
        stats = sync.stats()
        assert stats.missing == {"CAM_BACK_LEFT": 1}  # cycle 5 had no key frame: no bundle
        assert stats.drops[DropReason.MISSING] == 1


def test_measured_phases_are_reported() -> None:
    rig = Rig(NUSC, PERIOD_12HZ, NUSC_PHASES, jitter_ns=3 * MS)
    sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(SyncConfig(NUSC))
    run(sync, rig.frames(12, random.Random(3)))
    stats = sync.stats()
    assert stats.period_ns is not None and abs(stats.period_ns - PERIOD_12HZ) < 7 * MS
    for name, phase in zip(NUSC, NUSC_PHASES, strict=True):
        measured = stats.phases_ns[name]
        assert measured is not None and abs(measured - phase) <= 3 * MS, name
    assert all(0 <= s <= 7 * MS for s in stats.phase_spread_ns.values())


# --- property: random rigs against the brute-force reference ------------------------------------
@st.composite
def rigs(draw: st.DrawFn) -> tuple[Rig, int, dict[str, object]]:
    n = draw(st.integers(2, 6))
    hz = draw(st.integers(10, 30))
    period = 1_000_000_000 // hz
    jitter = draw(st.integers(0, 3)) * MS
    if n == 2:  # one camera either side of the key camera, up to half a period: its offset
        # plus both cameras' jitter stays short of it (else no measurement can tell the cycle)
        reach = period // 2 - 2 * jitter - MS
        phases: tuple[int, ...] = (0, int(draw(st.floats(-1.0, 1.0)) * reach))
    else:  # a trigger sweep over up to 55 % of the period, the key camera anywhere in it
        spread = draw(st.floats(0.0, 0.55)) * period
        step = spread / (n - 1)
        slots = [i * step + draw(st.floats(-0.1, 0.1)) * step for i in range(n)]
        order = draw(st.permutations(range(n)))  # which camera fires in which slot
        phases = tuple(int(slots[order[i]] - slots[order[0]]) for i in range(n))
    cams = tuple(f"cam{i}" for i in range(n))
    cyc = draw(st.integers(20, 45))
    seed = draw(st.integers(0, 2**31))
    rng = random.Random(seed)
    warm = 12  # measured phases: no drops in the first cycles of a pass
    dropped: set[tuple[int, int]] = set()
    p_drop = draw(st.sampled_from([0.0, 0.03, 0.1]))
    for c in range(warm, cyc):
        for i in range(n):
            if rng.random() < p_drop:
                dropped.add((c, i))
    if draw(st.booleans()):  # one camera silent for a stretch (up to about a second)
        cam = rng.randrange(n)
        start = rng.randrange(warm, cyc)
        dropped |= {(c, cam) for c in range(start, min(cyc, start + rng.randint(1, hz)))}
    opts = {
        "latency": draw(st.integers(0, 150)) * MS,
        "duplicates": draw(st.integers(0, 5)),
        "loops": draw(st.integers(1, 2)),
        "configured": draw(st.booleans()),
    }
    return Rig(cams, period, phases, jitter, dropped=dropped), cyc, {"seed": seed, **opts}


@settings(max_examples=80, deadline=None)
@given(rigs())
def test_random_rigs_give_exactly_the_complete_cycles(case: tuple[Rig, int, dict]) -> None:
    rig, cyc, opts = case
    rng = random.Random(opts["seed"])
    frames = rig.frames(cyc, rng)
    passes = [[RigFrame(f.camera, f.stamp_ns, f.cycle, loop) for f in frames]
              for loop in range(opts["loops"])]  # fmt: skip
    arrivals: list[RigFrame] = []
    for p in passes:  # a bag loop: the same stamps again after the first pass
        order = arrival_order(p, rng, opts["latency"])
        for _ in range(opts["duplicates"]):
            i = rng.randrange(len(order))
            order.insert(i + 1, order[i])
        arrivals += order
    cfg = SyncConfig(rig.cameras, offsets_ns=rig.phases_ns if opts["configured"] else None)
    resets: list[int] = []
    sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(cfg, on_reset=resets.append)
    got = run(sync, arrivals) + sync.flush()
    ref = reference_bundles([f for p in passes for f in p], rig.cameras)
    assert cycles(got) == sorted(ref)
    assert stamps(got) == [ref[k] for k in sorted(ref)]
    assert len(resets) == opts["loops"] - 1
    stats = sync.stats()
    assert stats.bundles_emitted == len(got)
    assert stats.drops[DropReason.DUPLICATE_STAMP] + stats.drops[DropReason.LATE] >= (
        opts["duplicates"] * opts["loops"]
    )


def test_arrival_order_does_not_change_the_bundles() -> None:
    rig = Rig(NUSC, PERIOD_12HZ, NUSC_PHASES, jitter_ns=3 * MS, dropped={(14, 2), (20, 5)})
    frames = rig.frames(40, random.Random(7))
    results = set()
    for seed in range(6):
        sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(SyncConfig(NUSC))
        order = arrival_order(frames, random.Random(seed), 200 * MS)
        results.add(tuple(stamps(run(sync, order) + sync.flush())))
    assert len(results) == 1


# --- the rules one by one -----------------------------------------------------------------------
CAMS = ("key", "a", "b")


def sync3(**kw: object) -> BundleSynchronizer[str]:
    cfg = SyncConfig(CAMS, offsets_ns=(0, 10 * MS, -10 * MS), **kw)  # type: ignore[arg-type]
    return BundleSynchronizer(cfg)


def feed(sync: BundleSynchronizer[str], cycles_: range, skip: set[tuple[int, str]]) -> list:
    out = []
    for c in cycles_:
        k = 1000 * MS + c * 100 * MS
        for cam, off in zip(CAMS, (0, 10, -10), strict=True):
            if (c, cam) not in skip:
                out += sync.add(cam, k + off * MS, f"{cam}{c}")
    return out


def test_waits_for_a_frame_that_is_still_due() -> None:
    sync = sync3()
    assert sync.add("key", 1000 * MS, "k") == []
    assert sync.add("b", 991 * MS, "b") == []  # a's frame (expected 1010 ms) is due
    assert sync.add("a", 899 * MS, "a-prev") == []  # a frame of the previous cycle: not it
    [bundle] = sync.add("a", 1012 * MS, "a")
    assert bundle.payloads == ("k", "a", "b") and bundle.stamp_ns == 1000 * MS


def test_missing_frame_is_decided_when_the_camera_moves_past_its_window() -> None:
    sync = sync3()
    assert feed(sync, range(3), {(1, "a")})[0].payloads == ("key0", "a0", "b0")
    stats = sync.stats()
    assert stats.missing == {"a": 1} and stats.drops[DropReason.MISSING] == 1
    assert stats.bundles_emitted == 2


def test_silent_camera_times_out_by_the_key_camera_clock() -> None:
    sync = sync3(timeout_ns=250 * MS)
    got = feed(sync, range(10), {(c, "a") for c in range(10)})
    assert got == []
    # key at 1000 + 100c ms, a expected 10 ms later: given up once the key is > 275 ms past it
    assert sync.stats().missing["a"] == 7
    assert len(sync.flush()) == 0 and sync.stats().missing["a"] == 10


def test_fill_rule_completes_with_the_nearest_frame_within_tolerance() -> None:
    sync = sync3(missing=MissingRule.FILL, fill_tolerance_ns=100 * MS)
    got = feed(sync, range(4), {(1, "a")})
    assert [b.payloads for b in got] == [
        ("key0", "a0", "b0"),
        ("key1", "a2", "b1"),  # a expected at 1110 ms: a2 (1210) and a0 (1010) both 100 ms away
        ("key2", "a2", "b2"),
        ("key3", "a3", "b3"),
    ] or [b.payloads for b in got][1] == ("key1", "a0", "b1")
    assert got[1].filled == ("a",)
    assert sync.stats().filled == {"a": 1}


def test_fill_rule_drops_when_nothing_is_near_enough() -> None:
    sync = sync3(missing=MissingRule.FILL, fill_tolerance_ns=50 * MS)
    got = feed(sync, range(4), {(1, "a")})
    assert [b.stamp_ns for b in got] == [1000 * MS, 1200 * MS, 1300 * MS]
    assert sync.stats().drops[DropReason.MISSING] == 1


def test_duplicate_unknown_and_late_frames_are_counted() -> None:
    sync = sync3()
    feed(sync, range(2), set())
    assert sync.add("a", 1110 * MS, "again") == []  # same stamp again: DUPLICATE
    assert sync.add("a", 1105 * MS, "late") == []  # another frame of a decided cycle: LATE
    assert sync.add("nope", 1, "x") == []
    sync.add("key", 1200 * MS, "k2")
    assert sync.add("key", 1200 * MS, "k2 again") == []
    drops = sync.stats().drops
    assert drops[DropReason.UNKNOWN_CAMERA] == 1
    assert drops[DropReason.DUPLICATE_STAMP] == 2 and drops[DropReason.LATE] == 1


def test_time_backwards_resets_and_calls_back() -> None:
    resets: list[int] = []
    sync: BundleSynchronizer[str] = BundleSynchronizer(
        SyncConfig(CAMS, offsets_ns=(0, 10 * MS, -10 * MS)), on_reset=resets.append
    )
    assert len(feed(sync, range(5), set())) == 5
    sync.add("key", 1500 * MS, "pending")
    assert len(feed(sync, range(3), set())) == 3  # the bag looped
    assert resets == [1000 * MS]
    stats = sync.stats()
    assert stats.resets == 1 and stats.drops[DropReason.TIME_BACKWARDS] == 1


def test_buffers_and_pending_stay_bounded() -> None:
    sync = sync3(max_pending=8, timeout_ns=10**15)
    for c in range(500):  # b never talks: bundles wait for it until they overflow
        sync.add("key", c * 100 * MS, "k")
        sync.add("a", c * 100 * MS + 10 * MS, "a")
    assert len(sync._keys) <= 8
    assert all(len(cam.frames) <= 64 for cam in sync._cams.values())
    assert sync.stats().drops[DropReason.OVERFLOW] > 400


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="unique"):
        SyncConfig(("a", "a"))
    with pytest.raises(ValueError, match="unique"):
        SyncConfig(())
    with pytest.raises(ValueError, match="one value per camera"):
        SyncConfig(("a", "b"), offsets_ns=(0,))
    with pytest.raises(ValueError, match="0 for the key"):
        SyncConfig(("a", "b"), offsets_ns=(5, 0))
    with pytest.raises(ValueError, match="fill_tolerance"):
        SyncConfig(("a",), tolerance_ns=50, fill_tolerance_ns=10)


def test_single_camera_emits_every_frame() -> None:
    sync: BundleSynchronizer[int] = BundleSynchronizer(SyncConfig(("only",)))
    assert [len(sync.add("only", t, t)) for t in (1, 2, 3)] == [1, 1, 1]


def test_threads_emit_each_bundle_once() -> None:
    sync: BundleSynchronizer[str] = BundleSynchronizer(
        SyncConfig(CAMS, offsets_ns=(0, 0, 0), max_pending=512)
    )
    got: list[int] = []
    lock = threading.Lock()

    def push(cam: str) -> None:
        for k in range(300):
            for b in sync.add(cam, (k + 1) * 100 * MS, cam):
                with lock:
                    got.append(b.stamp_ns)

    threads = [threading.Thread(target=push, args=(c,)) for c in CAMS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got += [b.stamp_ns for b in sync.flush()]
    # A thread racing ahead is a camera lagging behind the key camera's clock: its bundles may
    # be given up, but every key frame is decided exactly once and none is emitted twice.
    assert len(got) == len(set(got)) and got
    stats = sync.stats()
    assert stats.frames_received == 900 and stats.bundles_emitted == len(got)
    assert len(got) + stats.drops[DropReason.MISSING] <= 300


# --- trigger phase estimate ---------------------------------------------------------------------
def test_wrap_offset_and_period() -> None:
    assert wrap_offset(42, 100) == 42 and wrap_offset(58, 100) == -42
    assert wrap_offset(-50, 100) == -50 and wrap_offset(50, 100) == -50
    assert median_period_ns([0, 100, 200, 400, 500]) == 100  # one dropped frame
    assert median_period_ns([0, 100]) == 100 and median_period_ns([5]) is None


@pytest.mark.parametrize("phase_ms", [-49, -30, 0, 8, 42, 49])
def test_phase_estimate_near_half_a_period_and_with_drops(phase_ms: int) -> None:
    rng = random.Random(phase_ms)
    keys = [k * 100 * MS + rng.randint(-3, 3) * MS for k in range(20) if k not in (4, 5)]
    cam = [k * 100 * MS + phase_ms * MS + rng.randint(-3, 3) * MS for k in range(20) if k != 7]
    est = estimate_phase(keys, cam, 100 * MS, 8, latest=8)
    assert est is not None and est.samples == 8
    assert abs(wrap_offset(est.phase_ns - phase_ms * MS, 100 * MS)) <= 3 * MS
    assert est.spread_ns <= 9 * MS  # key and camera jitter, plus the estimate's own error
    assert estimate_phase(keys[:2], cam, 100 * MS, 8) is None  # too few frames between keys


def test_a_camera_faster_than_the_window_waits_for_the_nearest_frame() -> None:
    """A 100 Hz camera delivers two frames within one 15 ms window: the nearest one counts,
    which is known only once a frame at or after the expected stamp has arrived."""
    sync: BundleSynchronizer[str] = BundleSynchronizer(
        SyncConfig(("key", "fast"), offsets_ns=(0, 0))
    )
    for t in range(0, 200, 10):  # establishes the camera's 10 ms period
        sync.add("fast", t * MS + 3 * MS, f"f{t}")
    assert sync.add("key", 300 * MS, "k") == []
    assert sync.add("fast", 288 * MS, "too early") == []  # in the window, a nearer one may come
    assert sync.add("fast", 298 * MS, "nearest") == []
    [bundle] = sync.add("fast", 308 * MS, "after")
    assert bundle.payloads == ("k", "nearest")


def test_unwrap_takes_the_rig_sweep_as_the_cycle() -> None:
    t = PERIOD_12HZ
    nusc = dict(zip(NUSC, (0, 8 * MS, 17 * MS, 25 * MS, 33 * MS, -41 * MS), strict=True))
    assert unwrap_cycle(nusc, NUSC[0], t)["CAM_BACK_RIGHT"] == t - 41 * MS  # +42.3 ms
    middle = {"k": 0, "a": -30 * MS, "b": -15 * MS, "c": 15 * MS, "d": 30 * MS + t}
    assert unwrap_cycle(middle, "k", t) == {"k": 0, "a": -30 * MS, "b": -15 * MS,
                                            "c": 15 * MS, "d": 30 * MS}  # fmt: skip
    assert unwrap_cycle({"k": 0, "a": 45 * MS}, "k", 100 * MS) == {"k": 0, "a": 45 * MS}
    assert unwrap_cycle({"k": 0, "a": 55 * MS}, "k", 100 * MS) == {"k": 0, "a": -45 * MS}


def test_a_short_looping_recording_is_bundled_in_every_loop() -> None:
    """Two 2 Hz keyframes played in a loop: the measured phases survive the time resets, so
    every loop gives its bundles (a recording shorter than any warm-up)."""
    rig = Rig(NUSC, 500_000_000, tuple(8 * MS * i for i in range(6)))
    loop = rig.frames(2, random.Random(0))
    sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(SyncConfig(NUSC))
    got = []
    for _ in range(5):
        got += run(sync, loop)
    assert sync.stats().resets == 4
    assert len(got) >= 8  # each loop's first bundle is decided by its second key frame


def test_missing_key_frames_do_not_move_the_measured_phases() -> None:
    """A camera frame whose key frame is missing is measured against another cycle's key
    frame: those offsets are left out of the running estimate (and of the period)."""
    rig = Rig(NUSC, 500_000_000, tuple(8 * MS * i for i in range(6)), jitter_ns=1 * MS,
              dropped={(2, 0)})  # fmt: skip
    sync: BundleSynchronizer[RigFrame] = BundleSynchronizer(SyncConfig(NUSC))
    run(sync, rig.frames(4, random.Random(4)))  # key frames 0, 1, 3: periods 500 and 1000 ms
    stats = sync.stats()
    assert stats.period_ns is not None and abs(stats.period_ns - 500_000_000) <= 2 * MS
    for i, name in enumerate(NUSC):
        assert abs((stats.phases_ns[name] or 0) - 8 * MS * i) <= 2 * MS, (name, stats.phases_ns)
