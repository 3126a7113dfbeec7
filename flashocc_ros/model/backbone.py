"""Image backbone: torchvision-named ResNet (18/34/50/101) as mmdet's `pytorch`-style ResNet.
In: images (B·N, 3, H, W). Out: the stage outputs listed in `out_indices` (stage 0 = layer1).

Parameter names equal torchvision's `resnet*` minus `fc` (FLASHOCC_SPEC.md §4.3), so official
`img_backbone.*` keys load directly. Strides sit on the 3x3 convs (ResNet v1.5).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

#: depth -> (block type is bottleneck, blocks per stage)
RESNET_LAYOUT: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a residual (ResNet-18/34). (B, Cin, H, W) -> (B, C, H/s, W/s).

    The shortcut is torchvision's 1x1 conv + BN when the shape changes, unless a `shortcut`
    module is given (the BEV encoder's 3x3 conv with bias) or explicitly disabled.
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        default_shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            shortcut
            if shortcut is not None or not default_shortcut
            else _downsample(in_ch, width, stride)
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) with a residual. (B, Cin, H, W) -> (B, 4C, H/s, W/s)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


def stage_channels(depth: int) -> tuple[int, ...]:
    """Output channels of stages 0..3 of a ResNet of `depth` (18, 34, 50, 101)."""
    if depth not in RESNET_LAYOUT:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUT)}, got {depth}")
    block = Bottleneck if RESNET_LAYOUT[depth][0] else BasicBlock
    return tuple(w * block.expansion for w in STAGE_WIDTHS)


class ResNet(nn.Module):
    """ResNet without the classifier. Stage i (0..3) has stride 4·2^i relative to the input."""

    def __init__(self, depth: int, out_indices: Sequence[int]) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUT:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUT)}, got {depth}")
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..3, got {out_indices}")
        bottleneck, blocks = RESNET_LAYOUT[depth]
        block: type[BasicBlock] | type[Bottleneck] = Bottleneck if bottleneck else BasicBlock
        self.out_indices = tuple(out_indices)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        self.stage_channels = stage_channels(depth)
        stages: list[nn.Sequential] = []
        for i, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True)):
            layers: list[nn.Module] = []
            for j in range(count):
                layers.append(block(in_ch, width, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*layers))
        # torchvision names layer1..layer4 (official `img_backbone.layer{i}` keys)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned stage, in `out_indices` order."""
        return tuple(self.stage_channels[i] for i in self.out_indices)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: Tensor) -> Tensor:
        """(B·N, 3, H, W) -> (B·N, 64, H/4, W/4): conv7x7/2, BN, ReLU, maxpool/2."""
        out: Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return out

    def stereo_feature(self, x: Tensor) -> Tensor:
        """(B·N, 3, H, W) -> stage-0 output (B·N, C0, H/4, W/4) only (official
        `extract_stereo_ref_feat`: the extra reference frame needs nothing else)."""
        out: Tensor = self.layer1(self.stem(x))
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B·N, 3, H, W) -> [(B·N, C_i, H/2^(i+2), W/2^(i+2)) for i in out_indices]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B·N, 3, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        outs: list[Tensor] = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.stages()):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
            if i == last:
                break
        return outs
