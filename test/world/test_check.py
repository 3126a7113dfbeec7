"""`world check`: the ground truth of a generated bag, projected into its images with the bag's
CameraInfo and TF, sits on its objects; a ground truth with the old defect (a car layer over every
car body) or moved by one voxel does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.tools.world import main
from flashocc_ros.world.check import BagView, CheckError, check, read_bag
from flashocc_ros.world.dataset import WorldDataset

CAR, MANMADE = CLASS_NAMES.index("car"), CLASS_NAMES.index("manmade")
ARGS = ["--scenes", "1", "--keyframes", "2", "--seed", "6", "--width", "640", "--height",
        "360", "--keyframes-only", "--mask-width", "32"]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("check")
    bag, data = root / "bag", root / "data"
    assert main(["generate", "--bag", str(bag), "--out", str(data), "--depth", "--classes",
                 *ARGS]) == 0  # fmt: skip
    return bag, data


@pytest.fixture(scope="module")
def view(generated: tuple[Path, Path]) -> tuple[BagView, WorldDataset]:
    bag, data = generated
    return read_bag(bag), WorldDataset(data)


def test_cli_reports_the_generated_ground_truth_on_its_objects(
    generated: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bag, data = generated
    assert main(["check", "--bag", str(bag), "--data", str(data)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    judged, on = int(rows["car"][1]), float(rows["car"][2].rstrip("%"))
    assert judged > 500 and on >= 95.0
    assert int(rows["manmade"][1]) > 500 and float(rows["manmade"][2].rstrip("%")) >= 97.0
    assert rows["keyframes:"][-1] == "0"  # no image outside /tf


def test_the_old_car_layer_and_a_one_voxel_shift_are_caught(
    view: tuple[BagView, WorldDataset],
) -> None:
    bag, data = view
    good = check(bag, data)
    assert good.keyframes == 2 and good.images == 12
    stamp = data.keyframes[0].stamp_ns  # the variants are checked on the first keyframe
    sem = bag.ground_truth[stamp]
    first = check(bag, data, {stamp: sem})
    # The old defect: every car voxel's free neighbour above it labelled car too.
    above = np.zeros_like(sem, dtype=bool)
    above[:, :, 1:] = (sem[:, :, :-1] == CAR) & (sem[:, :, 1:] == FREE_LABEL)
    layered = check(bag, data, {stamp: np.where(above, CAR, sem).astype(np.uint8)})
    assert layered.on_fraction(CAR) < first.on_fraction(CAR) - 0.05
    moved = check(bag, data, {stamp: np.roll(sem, 1, axis=0)})
    assert moved.on_fraction(MANMADE) < first.on_fraction(MANMADE) - 0.05
    assert moved.points_in_class[CAR] < 0.8 * first.points_in_class[CAR]


def test_images_outside_tf_are_counted(view: tuple[BagView, WorldDataset]) -> None:
    """With the last /tf samples gone (as the old writer left them), the last keyframe's late
    cameras have no sample after their stamp and are skipped."""
    bag, data = view
    short = BagView(bag.tf, bag.tf_stamps[:-2], bag.infos, bag.image_stamps, bag.ground_truth)
    assert not short.covered(max(bag.image_stamps)) and bag.covered(max(bag.image_stamps))
    assert 0 < check(short, data).images_outside_tf < 6


def test_a_folder_without_maps_is_refused(
    generated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag, data = generated
    plain = tmp_path / "plain"  # the same index without the class maps
    plain.mkdir()
    index = json.loads((data / "world.json").read_text())
    for frame in index["scenes"][0]["frames"]:
        for cam in frame["cams"]:
            del cam["class_file"]
    (plain / "world.json").write_text(json.dumps(index))
    with pytest.raises(CheckError, match="--depth --classes"):
        check(read_bag(bag), WorldDataset(plain))
    capsys.readouterr()
    assert main(["check", "--bag", str(bag), "--data", str(plain)]) == 2
    assert main(["check", "--bag", str(tmp_path / "nope"), "--data", str(plain)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
