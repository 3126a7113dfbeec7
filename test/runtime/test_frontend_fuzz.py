"""No message content can break the front end: random and extreme field values of every input
type go through it; nothing raises, and good bundles that follow are assembled correctly.
In: hypothesis-built Image, CompressedImage, CameraInfo and TFMessage look-alikes (the field
names of the ROS messages). Out: pass/fail.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashocc_ros.node_config import NodeConfig
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.frontend import FrontEnd
from flashocc_ros.sensing.tf_buffer import matrix_to_quaternion

CAMS = ("CAM_FRONT", "CAM_BACK")
W, H = 176, 99
NS = SimpleNamespace  # a message look-alike: the ROS field names, any values
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-30, 1e30, -1.0, 1.0]),
)
FRAMES = st.one_of(
    st.sampled_from(["base_link", "odom", "cam_front_optical", "", "/", "x" * 300, "odom/../x"]),
    st.text(max_size=20),
)


def header(sec: int, nanosec: int, frame: str) -> Any:
    return NS(stamp=NS(sec=sec, nanosec=nanosec), frame_id=frame)


headers = st.builds(header, INT32, UINT32, FRAMES)
images = st.builds(
    lambda h, height, width, enc, step, big, data: NS(
        header=h,
        height=height,
        width=width,
        encoding=enc,
        step=step,
        is_bigendian=big,
        data=data,
    ),
    headers,
    st.one_of(UINT32, st.integers(0, 200)),
    st.one_of(UINT32, st.integers(0, 400)),
    st.one_of(st.sampled_from(["bgr8", "rgb8", "mono16", "yuv422", "weird8", ""]), st.text()),
    st.one_of(UINT32, st.integers(0, 2000)),
    st.integers(0, 255),
    st.binary(max_size=3000),
)
compressed = st.builds(
    lambda h, fmt, data: NS(header=h, format=fmt, data=data),
    headers,
    st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "tiff"]), st.text()),
    st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b),
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    ),
)
infos = st.builds(
    lambda h, width, height, kk: NS(header=h, width=width, height=height, k=kk),
    headers,
    UINT32,
    UINT32,
    st.lists(FLOATS, min_size=9, max_size=9),
)
transforms = st.builds(
    lambda h, child, t, q: NS(
        header=h,
        child_frame_id=child,
        transform=NS(
            translation=NS(x=t[0], y=t[1], z=t[2]), rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3])
        ),
    ),
    headers,
    FRAMES,
    st.lists(FLOATS, min_size=3, max_size=3),
    st.lists(FLOATS, min_size=4, max_size=4),
)
tf_msgs = st.builds(lambda ts: NS(transforms=ts), st.lists(transforms, max_size=3))
hostile = st.one_of(
    st.tuples(st.just("image"), st.sampled_from(CAMS), images),
    st.tuples(st.just("compressed"), st.sampled_from(CAMS), compressed),
    st.tuples(st.just("info"), st.sampled_from(CAMS), infos),
    st.tuples(st.just("tf"), st.booleans(), tf_msgs),
)


class Rig:
    """Good messages for the two cameras (raw bgr8) and odom <- base_link."""

    def __init__(self) -> None:
        self.rig = nuscenes_like_rig(W, H).ordered(CAMS)
        self.image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)

    def tf(self, parent: str, child: str, m: np.ndarray, stamp: int) -> Any:
        q = matrix_to_quaternion(m[:3, :3])
        return NS(
            header=header(*divmod(stamp, SEC), parent),
            child_frame_id=child,
            transform=NS(
                translation=NS(x=m[0, 3], y=m[1, 3], z=m[2, 3]),
                rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3]),
            ),
        )

    def feed_cycle(self, fe: FrontEnd, t: int) -> list[Any]:
        """/tf around t, then each camera's CameraInfo and image at t + 8 ms * n."""
        for s in range(t - 100_000_000, t + 120_000_000, 20_000_000):
            pose = np.eye(4)
            pose[0, 3] = (s - T0) / SEC  # 1 m/s
            fe.on_tf(NS(transforms=[self.tf("odom", "base_link", pose, s)]), False, s + 1000)
        out = []
        for n, cam in enumerate(self.rig.cameras):
            stamp = t + n * 8_000_000
            h = header(*divmod(stamp, SEC), f"{cam.name.lower()}_optical")
            k = [float(v) for v in cam.intrinsics.ravel()]
            fe.on_camera_info(cam.name, NS(header=h, width=W, height=H, k=k))
            img = NS(header=h, height=H, width=W, encoding="bgr8", step=W * 3, is_bigendian=0,
                     data=self.image.tobytes())  # fmt: skip
            out += fe.on_image(cam.name, img, stamp + 5_000_000)
        return out

    def statics(self, fe: FrontEnd) -> None:
        tfs = [self.tf("base_link", f"{c.name.lower()}_optical", c.camera_to_base, 0)
               for c in self.rig.cameras]  # fmt: skip
        fe.on_tf(NS(transforms=tfs), True, 0)


RIG = Rig()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile, min_size=1, max_size=12))
def test_hostile_messages_never_raise_and_good_bundles_follow(msgs: list[tuple]) -> None:
    params = NodeConfig(camera_names=CAMS, camera_offsets_s=(0.0, 0.008))
    fe = FrontEnd(params, input_size=(64, 176), decode_threads=1)
    refused: list[str] = []
    fe._on_refuse = lambda key, text: refused.append(key)
    RIG.statics(fe)
    t = T0
    for i in range(3):  # a few good cycles first, so hostile ones land mid-stream
        RIG.feed_cycle(fe, t + i * 100_000_000)
    now = t + 300_000_000
    for kind, who, msg in msgs:
        if kind in ("image", "compressed"):
            fe.compressed = frozenset(CAMS) if kind == "compressed" else frozenset()
            bundles = fe.on_image(who, msg, now)
            fe.compressed = frozenset()
        elif kind == "info":
            fe.on_camera_info(who, msg)
            bundles = []
        else:
            fe.on_tf(msg, who, now)
            bundles = []
        for b in bundles:  # whatever a hostile frame completes: assembling it fails cleanly
            try:
                if fe.ready(b):
                    fe.assemble(b)
            except (ValueError, LookupError):
                pass  # PipelineError, ImageDecodeError, TransformError
    good = []
    for i in range(12):  # good cycles after the attack: the last ones come through
        good += RIG.feed_cycle(fe, t + (4 + i) * 100_000_000)
    assert good, (msgs, refused)
    last = good[-1]
    assert fe.ready(last)
    cams = fe.assemble(last)
    assert [c.name for c in cams] == list(CAMS)
    assert np.array_equal(cams[0].image, RIG.image)
    assert math.isclose(cams[0].ego_pose[0, 3], (last.stamp_ns - T0) / SEC, abs_tol=1e-6)
    fe.close()
