"""Occ3D-nuScenes semantic classes: names, the free label and the official colours.
In: nothing. Out: constants shared by the model, the synthetic world, the evaluator and the node.
"""

from __future__ import annotations

import numpy as np

#: Occ3D-nuScenes class names, index = label value. 17 is "free" (empty space).
CLASS_NAMES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
NUM_CLASSES: int = len(CLASS_NAMES)  # 18
FREE_LABEL: int = 17
IGNORE_LABEL: int = 255  # loss ignore index (official CrossEntropyLoss ignore_index)

#: Official FlashOCC `tools/vis_occ.py` palette, RGB uint8, index = label value.
PALETTE_RGB: np.ndarray = np.array(
    [
        (0, 0, 0),
        (255, 120, 50),
        (255, 192, 203),
        (255, 255, 0),
        (0, 150, 245),
        (0, 255, 255),
        (200, 180, 0),
        (255, 0, 0),
        (255, 240, 150),
        (135, 60, 0),
        (160, 32, 240),
        (255, 0, 255),
        (175, 0, 75),
        (75, 0, 75),
        (150, 240, 80),
        (230, 230, 250),
        (0, 175, 0),
        (255, 255, 255),
    ],
    dtype=np.uint8,
)
PALETTE_RGB.setflags(write=False)
