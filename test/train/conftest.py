"""Shared fixture of the training tests: a tiny generated dataset folder with depth maps.
In: nothing. Out: the folder path (1 scene, 2 keyframes, 176×99 images), built once per session.
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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset folder: 1 scene × 2 keyframes, keyframes only, depth maps stored."""
    root = tmp_path_factory.mktemp("train_data") / "world"
    cfg = GenerateConfig(
        num_scenes=1,
        num_keyframes=2,
        width=WIDTH,
        height=HEIGHT,
        keyframes_only=True,
        save_depth=True,
    )
    rig = nuscenes_like_rig(WIDTH, HEIGHT)
    writer = DatasetWriter(root, rig, GridConfig())
    generate(cfg, writer, None, rig=rig)
    writer.close()
    return root


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine oversubscription costs far more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
