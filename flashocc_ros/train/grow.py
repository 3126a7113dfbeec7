"""Function-preserving growth of trained FlashOCC weights into a wider / deeper configuration.
In: a model, its ModelConfig and a target ModelConfig that differs only in the growable fields.
Out: a model of the target configuration computing exactly what the given one computed.

A trained model that underfits can be given more capacity without starting over (Net2Net-style):
- every tensor the two models share keeps its values in its leading slice;
- new output channels (more context channels, a wider BEV neck / occupancy head) start from the
  target model's own random initialisation, and every weight that reads them starts at zero, so
  they contribute nothing until training moves those weights;
- new residual blocks of the BEV encoder start as identities (their last BatchNorm scaled by zero;
  their input is a ReLU output, so relu(0 + x) = x).
The context channels are a suffix of the depth net's output (depth logits first), so growing them
keeps the depth logits in place. Training then uses the new capacity from the first step.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.backbone import BasicBlock
from flashocc_ros.model.flashocc import FlashOCC, build_model

GROWABLE = ("context_channels", "bev_num_layers", "bev_neck_channels", "head_channels")


class GrowError(ValueError):
    """The target configuration is not a growth of the source one this module supports."""


def check_growth(old: ModelConfig, new: ModelConfig) -> None:
    """Raise GrowError unless `new` is `old` with some GROWABLE fields made larger."""
    fixed = [
        f.name
        for f in dataclasses.fields(old)
        if f.name not in GROWABLE and f.name != "name"
        and getattr(old, f.name) != getattr(new, f.name)
    ]  # fmt: skip
    if fixed:
        raise GrowError(
            f"only {', '.join(GROWABLE)} can grow; the target also changes {', '.join(fixed)}"
        )
    for field in ("context_channels", "bev_neck_channels", "head_channels"):
        if getattr(new, field) < getattr(old, field):
            raise GrowError(
                f"{field} would shrink ({getattr(old, field)} -> {getattr(new, field)})"
            )
    if any(n < o for o, n in zip(old.bev_num_layers, new.bev_num_layers, strict=True)):
        raise GrowError(
            f"bev_num_layers can only add blocks per stage ({list(old.bev_num_layers)} -> "
            f"{list(new.bev_num_layers)})"
        )
    if new.context_channels != old.context_channels and (
        old.depth_net != "lss" or old.temporal or old.stereo
    ):
        raise GrowError(
            "context_channels can grow only for the single-frame LSS depth net (M0/M1/demo): "
            "temporal models interleave the frames' context channels"
        )


def grow_model(model: FlashOCC, old: ModelConfig, new: ModelConfig, seed: int = 0) -> FlashOCC:
    """A `new`-config model (eval mode) whose outputs equal `model`'s; see the module doc."""
    check_growth(old, new)
    torch.manual_seed(seed)  # the new channels' initialisation
    grown = build_model(new)
    source = model.state_dict()
    with torch.no_grad():
        for key, target in grown.state_dict().items():  # views of the grown parameters
            if key not in source:
                continue  # a new residual block: handled below
            value = source[key]
            if value.dim() != target.dim() or any(
                s > t for s, t in zip(value.shape, target.shape, strict=True)
            ):
                raise GrowError(f"{key}: {tuple(value.shape)} does not fit {tuple(target.shape)}")
            target[tuple(slice(0, s) for s in value.shape)] = value
            if target.dim() >= 2 and target.shape[1] > value.shape[1]:
                target[:, value.shape[1] :] = 0  # weights reading new channels
        for name, module in grown.named_modules():
            if isinstance(module, BasicBlock) and f"{name}.conv1.weight" not in source:
                nn.init.zeros_(module.bn2.weight)
                nn.init.zeros_(module.bn2.bias)
    return grown.eval()


__all__ = ["GROWABLE", "GrowError", "check_growth", "grow_model"]
