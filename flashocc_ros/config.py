"""The one source of configuration: occupancy grid and model architecture as frozen dataclasses.
In: a preset name or a YAML mapping. Out: `GridConfig` / `ModelConfig` values used everywhere.

Presets follow the official FlashOCC configs (see FLASHOCC_SPEC.md §1.2): `flashocc-r50-M0`,
`flashocc-r50` (M1) and `flashocc-r50-4d-stereo` (M2). `demo` and `tiny` are smaller variants of
the same architecture for the shipped demo weights and for tests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

#: nuScenes camera order used by every official config; index 0 defines the key ego frame.
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


# --- bounds --------------------------------------------------------------------------------------
# Every GridConfig / ModelConfig value is checked against these before anything is built, so a
# config (a YAML file or the one embedded in a weights file) can never ask for an absurd model:
# `neck_channels: 65536` alone would ask for about 155 GB. They are about ten times the largest
# official config (FLASHOCC_SPEC.md §1.2), never a limit a real model meets.
MAX_CHANNELS = 4096  # any channel count (official: at most 640)
MAX_INPUT_SIDE = 4096  # px, H or W of the network input (official: 256 x 704)
MAX_CAMERAS = 16  # N (official: 6)
MAX_DEPTH_M = 1000.0  # m, depth_stop (official: 45)
MAX_DEPTH_BINS = 1024  # D (official: 88)
MAX_LIFT_POINTS = 2**24  # N x D x fH x fW lifted points (official M1: 371,712)
MAX_ADJ_FRAMES = 16  # previous frames fused (official: 1)
MAX_BEV_STAGES = 8  # CustomResNet stages (official: 3)
MAX_BEV_BLOCKS = 32  # BasicBlocks per stage (official: 2)
MAX_CLASSES = 256  # labels are uint8 (official: 18)
MAX_GRID_CELLS = 2048  # voxels along one axis (official: 200)
MAX_GRID_VOXELS = 2**25  # X x Y x Z (official: 640,000)
MAX_BEV_Z_CELLS = 64  # height cells of the pooling grid (official: 1)


def _check_int(value: object, name: str, lo: int, hi: int) -> None:
    """ConfigError unless `value` is an int (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")


def _check_float(value: object, name: str, lo: float = -math.inf, hi: float = math.inf) -> None:
    """ConfigError unless `value` is a finite number in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")


def _check_ints(values: object, name: str, lo: int, hi: int, max_len: int) -> None:
    """ConfigError unless `values` is a sequence of 1..max_len ints in [lo, hi]."""
    if not isinstance(values, tuple | list) or not 1 <= len(values) <= max_len:
        raise ConfigError(f"{name} must be a list of 1 to {max_len} integers, got {values!r}")
    for i, v in enumerate(values):
        _check_int(v, f"{name}[{i}]", lo, hi)


@dataclass(frozen=True)
class GridConfig:
    """Occupancy and BEV grid in the ego frame (x forward, y left, z up), metres."""

    x_min: float = -40.0  # m
    x_max: float = 40.0  # m
    y_min: float = -40.0  # m
    y_max: float = 40.0  # m
    z_min: float = -1.0  # m
    z_max: float = 5.4  # m
    voxel_size: float = 0.4  # m, edge of one occupancy voxel (x, y and z)
    bev_z_cells: int = (
        1  # height cells of the lift-splat pooling grid (official: one 6.4 m pillar)
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "bev_z_cells":
                _check_float(getattr(self, f.name), f"grid {f.name}", -1e5, 1e5)
        _check_float(self.voxel_size, "grid voxel_size", 1e-3, 100.0)
        _check_int(self.bev_z_cells, "grid bev_z_cells", 1, MAX_BEV_Z_CELLS)
        for lo, hi, axis in (
            (self.x_min, self.x_max, "X"),
            (self.y_min, self.y_max, "Y"),
            (self.z_min, self.z_max, "Z"),
        ):
            if not hi > lo:
                raise ConfigError(f"grid {axis} range must be increasing, got [{lo}, {hi}]")
            cells = (hi - lo) / self.voxel_size
            if abs(cells - round(cells)) > 1e-6:
                raise ConfigError(
                    f"grid {axis} extent {hi - lo} m is not a multiple of voxel_size"
                )
            if round(cells) > MAX_GRID_CELLS:
                raise ConfigError(
                    f"grid {axis} has {round(cells)} voxels; at most {MAX_GRID_CELLS} are allowed"
                )
        if self.size_x * self.size_y * self.size_z > MAX_GRID_VOXELS:
            raise ConfigError(
                f"grid {self.shape} has {self.size_x * self.size_y * self.size_z} voxels; "
                f"at most {MAX_GRID_VOXELS} are allowed"
            )

    @property
    def size_x(self) -> int:
        """X: number of voxels along ego x (200)."""
        return round((self.x_max - self.x_min) / self.voxel_size)

    @property
    def size_y(self) -> int:
        """Y: number of voxels along ego y (200)."""
        return round((self.y_max - self.y_min) / self.voxel_size)

    @property
    def size_z(self) -> int:
        """Z: number of occupancy height layers (16)."""
        return round((self.z_max - self.z_min) / self.voxel_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the occupancy grid."""
        return (self.size_x, self.size_y, self.size_z)

    @property
    def bev_z_interval(self) -> float:
        """Height of one BEV pooling cell in metres (6.4 for the official single layer)."""
        return (self.z_max - self.z_min) / self.bev_z_cells


BackboneKind = Literal["resnet"]
DepthNetKind = Literal["lss", "camera_aware"]


@dataclass(frozen=True)
class ModelConfig:
    """FlashOCC architecture. Channel counts follow the official state_dict names."""

    name: str
    grid: GridConfig = field(default_factory=GridConfig)
    camera_names: tuple[str, ...] = NUSCENES_CAMERAS
    # --- image input -------------------------------------------------------------------------
    input_size: tuple[int, int] = (256, 704)  # (H, W) pixels of the network input after crop
    downsample: int = 16  # image stride of the feature map fed to the depth net
    # --- image encoder -----------------------------------------------------------------------
    backbone: BackboneKind = "resnet"
    backbone_depth: int = 50  # ResNet depth: 18, 34, 50 or 101
    backbone_out_indices: tuple[int, ...] = (2, 3)  # stages returned (0 = stereo feature)
    neck_channels: int = 256  # CustomFPN output channels
    # --- view transformer --------------------------------------------------------------------
    depth_start: float = 1.0  # m, first depth bin
    depth_stop: float = 45.0  # m, exclusive end of the depth bins
    depth_step: float = 0.5  # m, bin spacing (linear) — also defines D for log-spaced bins
    depth_sid: bool = False  # log-spaced (spacing-increasing) depth bins
    context_channels: int = 64  # numC_Trans: channels lifted into BEV
    depth_net: DepthNetKind = "lss"  # 1x1 conv (M0/M1) or camera-aware DepthNet (M2)
    aspp_mid_channels: int = 96  # DepthNet ASPP branch width (camera_aware only)
    stereo: bool = False  # stereo cost volume in the DepthNet (needs num_adj_frames >= 1)
    stereo_bias: float = 5.0  # added to the cost where the warped previous feature is invalid
    # --- temporal ----------------------------------------------------------------------------
    num_adj_frames: int = 0  # previous frames fused in BEV (M2: 1)
    # --- BEV encoder -------------------------------------------------------------------------
    bev_num_layers: tuple[int, ...] = (2, 2, 2)  # BasicBlocks per CustomResNet stage
    bev_channels: tuple[int, ...] = (128, 256, 512)  # CustomResNet stage widths
    bev_neck_channels: int = 256  # FPN_LSS output channels
    # --- occupancy head ----------------------------------------------------------------------
    head_channels: int = 256  # BEVOCCHead2D in_dim = out_dim
    num_classes: int = 18

    def __post_init__(self) -> None:
        self._check_bounds()
        if self.backbone_depth not in (18, 34, 50, 101):
            raise ConfigError(
                f"backbone_depth must be 18, 34, 50 or 101, got {self.backbone_depth}"
            )
        h, w = self.input_size
        if h % self.downsample or w % self.downsample:
            raise ConfigError(
                f"input_size {self.input_size} must be divisible by {self.downsample}"
            )
        if not 0 < self.depth_start < self.depth_stop or self.depth_step <= 0:
            raise ConfigError("depth bins need 0 < depth_start < depth_stop and depth_step > 0")
        if self.stereo and (self.num_adj_frames < 1 or 0 not in self.backbone_out_indices):
            raise ConfigError(
                "stereo needs num_adj_frames >= 1 and backbone stage 0 in out_indices"
            )
        if self.stereo and self.depth_net != "camera_aware":
            raise ConfigError("stereo needs depth_net 'camera_aware'")
        neck = self.backbone_out_indices[1:] if self.stereo else self.backbone_out_indices
        if not neck or list(neck) != sorted(set(neck)) or 2 ** (neck[0] + 2) != self.downsample:
            raise ConfigError(
                f"backbone_out_indices {tuple(self.backbone_out_indices)} do not fit downsample "
                f"{self.downsample}: the neck's stages must be increasing and its first stage "
                "(stride 2^(index+2)) must have the stride `downsample`"
            )
        if len(self.bev_num_layers) != len(self.bev_channels):
            raise ConfigError("bev_num_layers and bev_channels must have the same length")
        if not self.camera_names:
            raise ConfigError("camera_names must not be empty")

    def _check_bounds(self) -> None:
        """Types and ranges of every field (see the MAX_* bounds above), before any arithmetic
        on them; ConfigError names the field."""
        if not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {self.name!r}")
        if not isinstance(self.grid, GridConfig):
            raise ConfigError(f"grid must be a grid mapping, got {self.grid!r}")
        names = self.camera_names
        if not isinstance(names, tuple | list) or not 1 <= len(names) <= MAX_CAMERAS:
            raise ConfigError(f"camera_names must list 1 to {MAX_CAMERAS} cameras, got {names!r}")
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"camera_names must be distinct non-empty names, got {names!r}")
        _check_ints(self.input_size, "input_size", 1, MAX_INPUT_SIDE, 2)
        if len(self.input_size) != 2:
            raise ConfigError(f"input_size must be (H, W), got {self.input_size!r}")
        _check_int(self.downsample, "downsample", 4, 32)
        _check_ints(self.backbone_out_indices, "backbone_out_indices", 0, 3, 4)
        for key in ("neck_channels", "context_channels", "aspp_mid_channels"):
            _check_int(getattr(self, key), key, 1, MAX_CHANNELS)
        for key in ("bev_neck_channels", "head_channels"):
            _check_int(getattr(self, key), key, 1, MAX_CHANNELS)
        _check_ints(self.bev_channels, "bev_channels", 1, MAX_CHANNELS, MAX_BEV_STAGES)
        _check_ints(self.bev_num_layers, "bev_num_layers", 1, MAX_BEV_BLOCKS, MAX_BEV_STAGES)
        _check_int(self.num_classes, "num_classes", 2, MAX_CLASSES)
        _check_int(self.num_adj_frames, "num_adj_frames", 0, MAX_ADJ_FRAMES)
        _check_float(self.depth_start, "depth_start", 0.0, MAX_DEPTH_M)
        _check_float(self.depth_stop, "depth_stop", 0.0, MAX_DEPTH_M)
        _check_float(self.depth_step, "depth_step", 0.0, MAX_DEPTH_M)
        _check_float(self.stereo_bias, "stereo_bias", -1e6, 1e6)
        for key, allowed in (
            ("backbone", get_args(BackboneKind)),
            ("depth_net", get_args(DepthNetKind)),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("depth_sid", "stereo"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.depth_step > 0 and self.depth_stop > self.depth_start:
            bins = self.num_depth_bins
            if bins > MAX_DEPTH_BINS:
                raise ConfigError(
                    f"depth bins {self.depth_start:g}..{self.depth_stop:g} m every "
                    f"{self.depth_step:g} m are {bins}; at most {MAX_DEPTH_BINS} are allowed"
                )
            fh, fw = (side // self.downsample for side in self.input_size)
            points = len(names) * bins * fh * fw
            if points > MAX_LIFT_POINTS:
                raise ConfigError(
                    f"{len(names)} cameras x {bins} depth bins x {fh}x{fw} features are "
                    f"{points} lifted points; at most {MAX_LIFT_POINTS} are allowed"
                )

    @property
    def num_depth_bins(self) -> int:
        """D: number of depth bins (44 for M0, 88 for M1/M2)."""
        return math.ceil((self.depth_stop - self.depth_start) / self.depth_step - 1e-9)

    @property
    def feature_size(self) -> tuple[int, int]:
        """(fH, fW) of the depth/context maps."""
        return (self.input_size[0] // self.downsample, self.input_size[1] // self.downsample)

    @property
    def num_cameras(self) -> int:
        """N: number of cameras the model expects."""
        return len(self.camera_names)

    @property
    def temporal(self) -> bool:
        """True when the model fuses previous frames (needs a history object)."""
        return self.num_adj_frames > 0

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (YAML/JSON friendly) that `model_config_from_dict` reads back."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


_M1 = ModelConfig(name="flashocc-r50")

PRESETS: dict[str, ModelConfig] = {
    # FLASHOCC_SPEC §1.2 (a): 44 linear depth bins, BEV neck/head width 128.
    "flashocc-r50-M0": _M1.replace(
        name="flashocc-r50-M0",
        depth_step=1.0,
        bev_neck_channels=128,
        head_channels=128,
    ),
    # §1.2 (b): 88 linear depth bins (1.0 .. 44.5), width 256.
    "flashocc-r50": _M1,
    # §1.2 (e): camera-aware DepthNet with stereo, log-spaced 88 bins, 80 context ch, 2 frames.
    "flashocc-r50-4d-stereo": _M1.replace(
        name="flashocc-r50-4d-stereo",
        backbone_out_indices=(0, 2, 3),
        depth_sid=True,
        context_channels=80,
        depth_net="camera_aware",
        stereo=True,
        num_adj_frames=1,
        bev_channels=(160, 320, 640),
    ),
    # Small demo model: same architecture, ResNet-18, narrower BEV, trained on the synthetic world.
    # Stride-8 features (the neck also takes ResNet stage 1): at 128x352 input a stride-16 cell
    # spans 1.7 m at 30 m; stride 8 gained 3 points of held-out mIoU for ~1.2x the compute.
    "demo": _M1.replace(
        name="demo",
        input_size=(128, 352),
        downsample=8,
        backbone_out_indices=(1, 2, 3),
        backbone_depth=18,
        neck_channels=128,
        depth_step=1.0,
        context_channels=32,
        bev_num_layers=(1, 1, 1),
        bev_channels=(64, 128, 256),
        bev_neck_channels=64,
        head_channels=64,
    ),
    # Tiny model for fast tests: small input, ResNet-18, very narrow BEV.
    "tiny": _M1.replace(
        name="tiny",
        input_size=(64, 176),
        backbone_depth=18,
        neck_channels=32,
        depth_step=4.0,
        context_channels=8,
        bev_num_layers=(1, 1, 1),
        bev_channels=(16, 32, 64),
        bev_neck_channels=16,
        head_channels=16,
    ),
}
# Tiny M2-like model for tests: stereo feature, camera-aware DepthNet, SID bins, 2 frames.
PRESETS["tiny-stereo"] = PRESETS["tiny"].replace(
    name="tiny-stereo",
    backbone_out_indices=(0, 2, 3),
    depth_sid=True,
    depth_net="camera_aware",
    aspp_mid_channels=8,
    stereo=True,
    num_adj_frames=1,
)


def model_config(name: str) -> ModelConfig:
    """The preset called `name`; raises ConfigError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError as err:
        raise ConfigError(f"unknown model config {name!r}; known: {', '.join(PRESETS)}") from err


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Build a ModelConfig from a mapping. A `base` key names a preset that other keys override."""
    data = dict(data)
    base = data.pop("base", None)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
    if "grid" in data and isinstance(data["grid"], Mapping):
        grid_known = {f.name for f in dataclasses.fields(GridConfig)}
        bad = sorted(set(data["grid"]) - grid_known)
        if bad:
            raise ConfigError(f"unknown grid config keys: {', '.join(bad)}")
        data["grid"] = GridConfig(**data["grid"])
    for key, value in list(data.items()):
        if isinstance(value, list):
            data[key] = tuple(value)
    try:
        if base is not None:
            return model_config(str(base)).replace(**data)
        return ModelConfig(**data)
    except TypeError as err:
        raise ConfigError(f"invalid model config: {err}") from err


def load_model_config(source: str | Path) -> ModelConfig:
    """A preset name, or a path to a YAML file holding a model config mapping."""
    path = Path(source)
    if str(source) in PRESETS or path.suffix not in (".yaml", ".yml"):
        return model_config(str(source))
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read model config {path}: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"model config {path} must be a mapping")
    return model_config_from_dict(data)
