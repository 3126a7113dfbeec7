"""Each image is assembled with its own CameraInfo, not the latest one to arrive.
In: per-frame and latched CameraInfo around a calibration change. Out: pass/fail.
"""

from __future__ import annotations

from types import SimpleNamespace as Msg

import numpy as np

from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.frontend import FrontEnd
from flashocc_ros.sensing.camera_info import CameraInfoStore, CameraIntrinsics

S = 1_000_000_000
W, H = 176, 99


def info(fx: float) -> CameraIntrinsics:
    return CameraIntrinsics(W, H, (fx, 0.0, 88.0, 0.0, fx, 50.0, 0.0, 0.0, 1.0), "cam")


def test_store_pairs_by_stamp_and_knows_when_a_pairing_is_final() -> None:
    store = CameraInfoStore(["CAM"])
    assert store.select("CAM", 5) is None and not store.settled("CAM", 5)
    store.note_image("CAM", 100)
    store.add("CAM", 100, info(100.0))  # per-frame CameraInfo (same stamp as the image)
    store.note_image("CAM", 200)
    assert not store.settled("CAM", 200)  # frame 200's own CameraInfo is still due
    store.add("CAM", 200, info(200.0))  # the calibration changes with frame 200
    assert store.settled("CAM", 200)
    assert store.select("CAM", 100).k[0] == 100.0  # the older image keeps its own
    assert store.select("CAM", 200).k[0] == 200.0
    assert store.select("CAM", 150).k[0] == 100.0  # newest not newer than the image
    latched = CameraInfoStore(["CAM"])
    latched.add("CAM", 1, info(50.0))  # published once, at start
    latched.note_image("CAM", 500)
    assert latched.settled("CAM", 500) and latched.select("CAM", 500).k[0] == 50.0
    early = CameraInfoStore(["CAM"])
    early.add("CAM", 900, info(90.0))  # only newer than the image: the oldest, counted
    assert early.select("CAM", 500).k[0] == 90.0 and early.newer_than_image == 1


def test_a_new_calibration_arriving_before_an_older_bundle_is_assembled_is_not_used_for_it() -> (
    None
):
    """The change that used to be applied to the bundle before it: CameraInfo for frame k+1
    (new focal length) arrives while bundle k still waits; bundle k keeps frame k's."""
    fe = FrontEnd(
        NodeConfig(camera_names=("CAM",), odom_frame=""), input_size=(64, 176), decode_threads=1
    )
    ident = Msg(x=0.0, y=0.0, z=0.0, w=1.0)
    fe.on_tf(Msg(transforms=[Msg(header=Msg(stamp=Msg(sec=0, nanosec=0), frame_id="base_link"),
                                 child_frame_id="cam", transform=Msg(translation=ident,
                                 rotation=ident))]), True, 0)  # fmt: skip
    pixels = np.zeros((H, W, 3), np.uint8).tobytes()

    def header(t: int) -> Msg:
        return Msg(stamp=Msg(sec=t // S, nanosec=t % S), frame_id="cam")

    def image(t: int) -> Msg:
        return Msg(header=header(t), height=H, width=W, encoding="bgr8", step=W * 3,
                   is_bigendian=0, data=pixels)  # fmt: skip

    k = [100.0, 0.0, 88.0, 0.0, 100.0, 50.0, 0.0, 0.0, 1.0]
    t0 = 10 * S
    fe.on_camera_info("CAM", Msg(header=header(t0), width=W, height=H, k=k))
    [bundle0] = fe.on_image("CAM", image(t0), t0)
    fe.on_camera_info("CAM", Msg(header=header(t0 + S // 10), width=W, height=H,
                                 k=[150.0, *k[1:4], 150.0, *k[5:]]))  # fmt: skip
    [bundle1] = fe.on_image("CAM", image(t0 + S // 10), t0 + S // 10)
    assert fe.assemble(bundle0)[0].intrinsics[0, 0] == 100.0
    assert fe.assemble(bundle1)[0].intrinsics[0, 0] == 150.0
    fe.close()
