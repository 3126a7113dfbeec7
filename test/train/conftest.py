"""Shared fixtures of the training tests: two tiny generated dataset folders (depth maps in one).
In: nothing. Out: the folder paths (1 scene, 2 keyframes, 176×99 images), built once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flashocc_ros.config import GridConfig
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.world.dataset import DatasetWriter
from flashocc_ros.world.generate import GenerateConfig, generate

WIDTH, HEIGHT = 176, 99


def _generate(root: Path, seed: int, save_depth: bool) -> Path:
    cfg = GenerateConfig(
        num_scenes=1,
        num_keyframes=2,
        width=WIDTH,
        height=HEIGHT,
        keyframes_only=True,
        save_depth=save_depth,
        seed=seed,
    )
    rig = nuscenes_like_rig(WIDTH, HEIGHT)
    writer = DatasetWriter(root, rig, GridConfig())
    generate(cfg, writer, None, rig=rig)
    writer.close()
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset folder: 1 scene × 2 keyframes, keyframes only, depth maps stored."""
    return _generate(tmp_path_factory.mktemp("train_data") / "world", 0, True)


@pytest.fixture(scope="session")
def tiny_data_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second folder like `tiny_data` (another scene, seed 1) without depth maps."""
    return _generate(tmp_path_factory.mktemp("train_data_b") / "world", 1, False)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine oversubscription costs far more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
