"""One CLI command writes 2 scenes x 20 keyframes to a bag + folder; read back independently."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader

from flashocc_ros.config import NUSCENES_CAMERAS, GridConfig
from flashocc_ros.msgdefs import flashocc_typestore
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.tools.world import main
from flashocc_ros.world.dataset import WorldDataset
from flashocc_ros.world.ground_truth import GroundTruthMaker
from flashocc_ros.world.render import Renderer
from flashocc_ros.world.scene import generate_scene

W, H = 160, 90
ARGS = ["--scenes", "2", "--keyframes", "20", "--seed", "3", "--width", str(W), "--height",
        str(H), "--keyframes-only", "--mask-width", "48"]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("world")
    bag, data = root / "bag", root / "data"
    assert main(["generate", "--bag", str(bag), "--out", str(data), *ARGS]) == 0
    return bag, data


def _read_mcap(bag: Path) -> tuple[dict[str, list[Any]], dict[str, dict[str, str]]]:
    files = list(bag.glob("*.mcap"))
    assert len(files) == 1
    msgs: dict[str, list[Any]] = defaultdict(list)
    meta: dict[str, dict[str, str]] = {}
    with files[0].open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, ros_msg in reader.iter_decoded_messages(log_time_order=True):
            msgs[channel.topic].append((message.log_time, ros_msg))
            meta[channel.topic] = dict(channel.metadata)
    return msgs, meta


def test_bag_reads_back_with_mcap(generated: tuple[Path, Path]) -> None:
    bag, _ = generated
    msgs, meta = _read_mcap(bag)
    cams = [c.lower() for c in NUSCENES_CAMERAS]
    for c in cams:
        assert len(msgs[f"/{c}/image_raw"]) == 40
        assert len(msgs[f"/{c}/camera_info"]) == 40
    gts = msgs["/ground_truth/occupancy"]
    assert len(gts) == 40
    # /tf_static: latched (transient local) and one transform per camera.
    ((_, static),) = msgs["/tf_static"]
    assert {t.child_frame_id for t in static.transforms} == {f"{c}_optical" for c in cams}
    qos = yaml.safe_load(meta["/tf_static"]["offered_qos_profiles"])
    assert qos[0]["durability"] in ("transient_local", 1)  # latched on replay
    # /tf at >= 50 Hz over each scene.
    tf_t = np.array([t for t, _ in msgs["/tf"]]) * 1e-9
    gaps = np.diff(tf_t)
    assert np.median(gaps) <= 0.0201
    assert all(m.transforms[0].header.frame_id == "odom" for _, m in msgs["/tf"][:5])
    # Keyframe stamp = CAM_FRONT_LEFT stamp; cameras fire in rig order, staggered.
    stamp = [[_ns(m.header.stamp) for _, m in msgs[f"/{c}/image_raw"]] for c in cams]
    st = np.array(stamp)  # (N, frames)
    assert (np.diff(st, axis=0) > 0).all() and (st[-1] - st[0]).max() < 60_000_000
    assert [_ns(m.header.stamp) for _, m in gts] == list(st[0])
    img = msgs["/cam_front/image_raw"][0][1]
    assert (img.width, img.height, img.encoding, img.step) == (W, H, "bgr8", 3 * W)
    assert img.header.frame_id == "cam_front_optical"
    info = msgs["/cam_front/camera_info"][0][1]
    assert info.distortion_model == "plumb_bob" and list(info.d) == [0.0] * 5
    rig = nuscenes_like_rig(W, H)
    assert np.allclose(np.array(info.k).reshape(3, 3), rig.cameras[1].intrinsics)
    # Pixels and labels equal a fresh render of scene 0, keyframe 0.
    scene = generate_scene(3000, 20)
    ren = Renderer(scene, rig).render(1, float(scene.timing.camera_times(0)[1]))
    pix = np.frombuffer(bytes(img.data), np.uint8).reshape(H, W, 3)
    assert np.array_equal(pix[::17, ::23], ren.image[::17, ::23])
    occ = gts[0][1]
    assert occ.header.frame_id == "base_link" and occ.model_name == "ground_truth"
    assert (occ.size_x, occ.size_y, occ.size_z) == (200, 200, 16)
    assert (occ.origin.position.x, occ.origin.position.z, occ.voxel_size.x) == (-40, -1, 0.4)
    want = GroundTruthMaker(scene, rig, GridConfig(), mask_width=48).make(0.0)
    got = np.frombuffer(bytes(occ.labels), np.uint8).reshape(200, 200, 16)
    assert np.array_equal(got, want.semantics)


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def test_bag_is_in_log_time_order_and_tf_covers_every_image(generated: tuple[Path, Path]) -> None:
    """Read with rosbags: every message is logged at its header stamp; each image stamp lies
    between two adjacent /tf samples (50 Hz) of its scene, so a strict lookup never extrapolates.
    Read in file order with mcap (rosbags sorts): the log times never go back, as a recorder
    writes them."""
    bag, _ = generated
    tf, images = [], []
    with AnyReader([bag], default_typestore=flashocc_typestore()) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            heads = msg.transforms if conn.msgtype == "tf2_msgs/msg/TFMessage" else [msg]
            assert {_ns(h.header.stamp) for h in heads} == {log_ns}, conn.topic
            if conn.topic == "/tf":
                tf.append(log_ns)
            elif conn.topic.endswith("/image_raw"):
                images.append(log_ns)
    assert len(images) == 2 * 20 * 6
    tf_ns = np.array(sorted(tf))
    img = np.array(images)
    before = tf_ns[np.searchsorted(tf_ns, img, side="right") - 1]
    after = tf_ns[np.minimum(np.searchsorted(tf_ns, img, side="left"), len(tf_ns) - 1)]
    assert (before <= img).all() and (after >= img).all(), "an image lies outside /tf"
    assert (after - before).max() <= 20_000_000, "an image lies in a gap between scenes"
    (mcap_file,) = bag.glob("*.mcap")
    with mcap_file.open("rb") as f:
        order = [m.log_time for _, _, m in make_reader(f).iter_messages(log_time_order=False)]
    assert len(order) > len(images) and (np.diff(order) >= 0).all()


def test_dataset_folder_and_evaluate(
    generated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag, data = generated
    ds = WorldDataset(data)
    assert len(ds) == 40 and ds.scenes == ["scene-003000", "scene-003001"]
    s = ds.sample(21)
    assert s.images.shape == (6, H, W, 3) and s.labels is not None
    assert np.allclose(s.sensor_to_keyego[0], s.sensor_to_ego[0])
    # Ground truth as prediction: 100 % from folder predictions and from the bag topic.
    pred = tmp_path / "pred"
    for rec in ds.keyframes[:5]:
        (pred / rec.scene / str(rec.token)).mkdir(parents=True)
        np.savez(pred / rec.scene / str(rec.token) / "pred.npz",
                 semantics=ds.labels(rec).semantics)  # fmt: skip
    assert main(["evaluate", "--gt", str(data), "--pred", str(pred)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("mIoU (0-16)")).split()[-1] == "100.00"
    assert lines[-1].startswith("mIoU by distance from the ego: 0-10 m 100.00 %")
    assert main(["evaluate", "--gt", str(bag), "--pred", str(bag),
                 "--pred-topic", "/ground_truth/occupancy"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "frames: 40" in out and "100.00" in out
    # <stamp_ns>.npz files (what tools.replay and flashocc_record write) against the bag.
    stamped = tmp_path / "stamped"
    stamped.mkdir()
    for rec in ds.keyframes[:3]:
        np.savez(stamped / f"{rec.stamp_ns}.npz", semantics=ds.labels(rec).semantics)
    assert main(["evaluate", "--gt", str(bag), "--pred", str(stamped)]) == 0
    out = capsys.readouterr().out
    assert "frames: 3" in out and "100.00" in out


def test_parallel_generation_writes_the_same_folder(tmp_path: Path) -> None:
    """--workers renders scenes in processes: the index, every image, depth map and label file
    are those of the one-process run."""
    args = ["--scenes", "3", "--keyframes", "3", "--seed", "5", "--width", "96", "--height",
            "54", "--keyframes-only", "--mask-width", "24", "--depth"]  # fmt: skip
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["generate", "--out", str(one), *args]) == 0
    assert main(["generate", "--out", str(many), "--workers", "2", *args]) == 0
    assert (one / "world.json").read_text() == (many / "world.json").read_text()
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(many) for p in many.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == 3 * 3 * 6
    for f in files:
        if f.suffix == ".npz":  # zip members carry a write time: compare the arrays
            a, b = np.load(one / f), np.load(many / f)
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
        else:
            assert (one / f).read_bytes() == (many / f).read_bytes(), f


def test_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--scenes", "1"]) == 2
    assert main(["evaluate", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path)]) == 2
    assert main(["generate", "--out", str(tmp_path / "x"), "--keyframes", "0"]) == 2
    assert main(["generate", "--out", str(tmp_path / "y"), "--workers", "0"]) == 2
    assert main(["generate", "--bag", str(tmp_path / "b"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
