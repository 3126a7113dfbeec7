"""Where evaluation reads occupancy grids from: dataset/prediction folders or rosbags.
In: a path (folder of labels.npz / npz files, or a rosbag2). Out: {key: grid (X, Y, Z)} mappings.

Keys are keyframe tokens for folders and header stamps (ns) for bags; `match` pairs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from flashocc_ros.msgdefs import OCCUPANCY_TYPE, flashocc_typestore
from flashocc_ros.world.bag import MASK_TOPIC, OCCUPANCY_TOPIC
from flashocc_ros.world.dataset import INDEX_FILE, WorldDataset


class SourceError(ValueError):
    """An evaluation input is missing or unreadable."""


def is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").exists() or path.suffix in (".mcap", ".db3")


def _grid(msg: Any) -> np.ndarray:
    shape = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    labels = np.asarray(msg.labels, dtype=np.uint8)
    if labels.size != shape[0] * shape[1] * shape[2]:
        raise SourceError(f"Occupancy message with {labels.size} labels for grid {shape}")
    return labels.reshape(shape)


def read_bag_grids(path: Path, topic: str | None) -> dict[int, np.ndarray]:
    """{header stamp ns: (X, Y, Z) labels} of an Occupancy topic (None: the first one that is
    not ground truth)."""
    try:
        with AnyReader([path], default_typestore=flashocc_typestore()) as reader:
            conns = [c for c in reader.connections if c.msgtype == OCCUPANCY_TYPE]
            if topic is None:
                conns = [c for c in conns if c.topic not in (OCCUPANCY_TOPIC, MASK_TOPIC)][:1]
            else:
                conns = [c for c in conns if c.topic == topic]
            if not conns:
                raise SourceError(f"{path}: no Occupancy topic {topic or '(prediction)'}")
            out = {}
            for conn, _, raw in reader.messages(connections=conns):
                msg: Any = reader.deserialize(raw, conn.msgtype)
                stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
                out[stamp] = _grid(msg)
            return out
    except SourceError:
        raise
    except Exception as err:  # rosbags raises several unrelated error types
        raise SourceError(f"cannot read bag {path}: {err}") from err


def read_ground_truth(path: Path) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """{key: (semantics, mask_camera)} from a dataset folder (token keys) or bag (stamp keys)."""
    if is_bag(path):
        sem = read_bag_grids(path, OCCUPANCY_TOPIC)
        mask = read_bag_grids(path, MASK_TOPIC)
        return {k: (v, mask[k].astype(bool)) for k, v in sem.items() if k in mask}
    if not (path / INDEX_FILE).exists():
        raise SourceError(f"{path} is neither a world dataset folder nor a rosbag2")
    ds = WorldDataset(path)
    out: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    for rec in ds.keyframes:
        lab = ds.labels(rec)
        out[rec.token] = (lab.semantics, lab.mask_camera)
        out[rec.stamp_ns] = out[rec.token]
    return out


def read_predictions(path: Path, topic: str | None = None) -> dict[Any, np.ndarray]:
    """{key: semantics} from a bag, or a folder of npz files named <token>.npz, <stamp_ns>.npz
    (int key) or <scene>/<token>/*.npz, each holding `semantics` (X, Y, Z)."""
    if is_bag(path):
        return dict(read_bag_grids(path, topic))
    if not path.is_dir():
        raise SourceError(f"prediction folder {path} does not exist")
    out: dict[Any, np.ndarray] = {}
    for f in sorted(path.rglob("*.npz")):
        token = f.stem if f.parent == path else f.parent.name
        with np.load(f) as z:
            if "semantics" not in z:
                raise SourceError(f"{f} has no 'semantics' array")
            # <stamp_ns>.npz (replay, flashocc_record) is keyed by its stamp like a bag grid.
            out[int(token) if token.isdigit() else token] = z["semantics"]
    if not out:
        raise SourceError(f"no .npz predictions under {path}")
    return out


def match(
    gt: dict[Any, tuple[np.ndarray, np.ndarray]],
    pred: dict[Any, np.ndarray],
    tolerance_ns: int = 1_000_000,
) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
    """(key, pred, gt semantics, mask) for every prediction with ground truth; stamps match
    within `tolerance_ns`."""
    stamps = np.array(sorted(k for k in gt if isinstance(k, int)), dtype=np.int64)
    out = []
    for key, p in pred.items():
        if key in gt:
            g = gt[key]
        elif isinstance(key, int) and len(stamps):
            near = int(stamps[np.argmin(np.abs(stamps - key))])
            if abs(near - key) > tolerance_ns:
                continue
            g = gt[near]
        else:
            continue
        out.append((key, p, g[0], g[1]))
    return out
