"""Offline replay of a vehicle-style recording: the right frame of every camera, poses as /tf
gives them, the user's topic names, and one clear line when the topics are not found.
In: a 12 Hz staggered, jittered recording with drops, a silent camera, a /tf gap.
Out: pass/fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rig_recording import RigRecording, check_results, write_rig_recording, write_test_weights

from flashocc_ros.camera_topics import camera_topics_yaml
from flashocc_ros.node_config import node_config_from_mapping
from flashocc_ros.runtime.bag_replay import OfflineReplay
from flashocc_ros.runtime.factory import create_pipeline
from flashocc_ros.runtime.grid_file import result_arrays


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RigRecording, Path]:
    root = tmp_path_factory.mktemp("rig")
    rec = write_rig_recording(root / "bag")
    (root / "cameras.yaml").write_text(camera_topics_yaml(rec.topics))
    write_test_weights(root / "tiny.safetensors")
    return root / "bag", rec, root


def test_offline_grids_use_each_cameras_frame_of_the_cycle_and_tf_poses(
    recording: tuple[Path, RigRecording, Path],
) -> None:
    bag, rec, root = recording
    params = node_config_from_mapping(
        {"model_config": "tiny", "weights": str(root / "tiny.safetensors")}
    )
    replay = OfflineReplay(params, create_pipeline(params), rec.topics, explicit_topics=True)
    results = {r.stamp_ns: r for r in replay.run(bag)}
    check_results(rec, {stamp: result_arrays(r) for stamp, r in results.items()})
    stats = replay.frontend.sync.stats() if replay.frontend else None
    assert stats is not None and stats.drops  # the silent camera's cycles were dropped, counted
    assert stats.missing["CAM_BACK_LEFT"] >= 12 and stats.missing["CAM_FRONT"] == 1
    labels = [r.labels for r in results.values()]
    assert any(not np.array_equal(labels[0], x) for x in labels[1:])  # grids follow the frames


def replay_cli(bag: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flashocc_ros.tools.replay", str(bag), "--out", str(out)]
    cmd += ["--param", "model_config=tiny", "--param", "weights=random", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_replay_reads_a_recording_with_the_users_topic_names(
    recording: tuple[Path, RigRecording, Path], tmp_path: Path
) -> None:
    bag, rec, root = recording
    n = len(rec.complete_cycles())
    done = replay_cli(bag, tmp_path / "a", "--cameras", str(root / "cameras.yaml"))
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "a").glob("*.npz"))) == n
    remaps = [f"--remap=~/input/{t.name.lower()}/image:={t.image}" for t in rec.topics]
    remaps += [
        f"-r=/flashocc/input/{t.name.lower()}/camera_info:={t.camera_info}" for t in rec.topics
    ]
    done = replay_cli(bag, tmp_path / "b", *remaps)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "b").glob("*.npz"))) == n
    for f in (tmp_path / "a").glob("*.npz"):
        a, b = np.load(f), np.load(tmp_path / "b" / f.name)
        np.testing.assert_array_equal(a["semantics"], b["semantics"])
        np.testing.assert_array_equal(a["camera_stamps_ns"], b["camera_stamps_ns"])


def test_replay_without_the_topics_says_which_it_looked_for_and_which_exist(
    recording: tuple[Path, RigRecording, Path], tmp_path: Path
) -> None:
    bag, _, _ = recording
    done = replay_cli(bag, tmp_path / "x")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    line = [ln for ln in done.stderr.splitlines() if "no camera topic" in ln]
    assert len(line) == 1, done.stderr
    assert "/cam_front/image_raw" in line[0]  # looked for
    assert "/sensing/camera/front/image_raw/compressed (CompressedImage)" in line[0]  # exists


@pytest.mark.parametrize("case", ["missing", "not-a-bag", "bad-remap", "bad-params"])
def test_user_mistakes_give_one_line_and_no_traceback(
    recording: tuple[Path, RigRecording, Path], tmp_path: Path, case: str
) -> None:
    bag = recording[0]
    extra: list[str] = []
    if case == "missing":
        bag = tmp_path / "nope"
    elif case == "not-a-bag":
        bag = tmp_path / "junk.mcap"
        bag.write_bytes(b"not an mcap file at all")
    elif case == "bad-remap":
        extra = ["--remap", "~/input/cam_nowhere/image:=/x"]
    else:
        (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters: {sync_tolerancee_s: 0.01}\n")
        extra = ["--params-file", str(tmp_path / "p.yaml")]
    done = replay_cli(bag, tmp_path / "out", *extra)
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("flashocc-replay:")]
    assert len(errors) == 1, done.stderr
    if case == "bad-params":
        assert "did you mean sync_tolerance_s" in errors[0]
