"""FlashOCC training loop: AdamW, warm-up + cosine schedule, checkpoints, eval, optional DDP.
In: a `TrainConfig` (data folders, model preset, schedule). Out: weights, trainer state, record.

Official recipe (FLASHOCC_SPEC.md §1.1): AdamW (lr 1e-4, wd 1e-2), linear warm-up, grad-clip 5,
masked occupancy CE; plus optional BEVDepth-style depth supervision. Single-frame models and the
4D-stereo model (M2: its older keyframes under no_grad, as the official). Launched by `torchrun`
(RANK / WORLD_SIZE set) it runs DistributedDataParallel (gloo on CPU, nccl on CUDA) with a
DistributedSampler; otherwise one process. Output folder:

    <out>/checkpoints/step_XXXXXXX/{model.safetensors, trainer_state.pt}   (resumable)
    <out>/model.safetensors        final weights (our format, ModelConfig embedded)
    <out>/metrics.jsonl            one line per logged step / eval
    <out>/train_record.json        command, seed, data sizes, time, final mIoU and per-class IoU
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from flashocc_ros.classes import CLASS_NAMES
from flashocc_ros.config import ConfigError, ModelConfig, load_model_config
from flashocc_ros.cpu import warn_if_slow_bf16
from flashocc_ros.eval.metrics import MiouMetric, MiouResult
from flashocc_ros.model.checkpoint import load_checkpoint_into, save_flashocc
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import depth_values
from flashocc_ros.model.temporal import forward_stereo4d_train
from flashocc_ros.train.checkpoints import (
    STATE_FILE,
    WEIGHTS_FILE,
    checkpoint_dirs,
    load_state,
    save_checkpoint,
    set_rng_state,
)
from flashocc_ros.train.data import (
    EpochKeys,
    OccupancyDataset,
    batch_calibration,
    batch_logits,
    class_counts,
    temporal_frames,
)
from flashocc_ros.train.distributed import (
    Dist,
    replica_hashes,
    setup_distributed,
    state_hash,
    sync_buffers,
)
from flashocc_ros.train.losses import (
    class_balance_weights,
    depth_loss,
    depth_targets,
    lovasz_softmax_loss,
    occupancy_loss,
)

log = logging.getLogger("flashocc_ros.train")

# DDP notes that 1x1-conv weight grads are laid out unlike its buckets; values are unaffected.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (also written to the train record)."""

    train_dirs: tuple[Path, ...]  # dataset folders (docs/dataset_format.md), read as one
    out_dir: Path  # output folder (checkpoints, final weights, record)
    val_dir: Path | None = None  # held-out dataset folder for mIoU; None = no evaluation
    model_config: str = "demo"  # preset name or YAML path (flashocc_ros.config)
    steps: int | None = None  # optimiser steps; exactly one of steps / epochs
    epochs: int | None = None  # passes over the training keyframes
    batch_size: int = 1  # keyframes per step and process (1 keyframe = N images)
    lr: float = 1e-3  # peak AdamW learning rate (official 1e-4 with a pretrained backbone)
    weight_decay: float = 1e-2  # AdamW weight decay (official)
    warmup_steps: int = 200  # linear warm-up from lr·warmup_ratio to lr (official 200 iters)
    warmup_ratio: float = 1e-3  # lr factor at step 0 (mmcv default)
    min_lr_ratio: float = 1e-2  # cosine decay ends at lr·min_lr_ratio
    grad_clip: float = 5.0  # max global grad norm (official); <= 0 disables
    depth_weight: float = 0.5  # depth BCE weight; 0 disables depth supervision
    class_balance: bool = False  # official class_balance: CE weights 1/ln(voxel count of class)
    lovasz_weight: float = 0.0  # weight of an added Lovász-softmax loss (not official); 0 = off
    augment: bool = True  # official image + BEV augmentation (off: test-time geometry)
    bf16: bool = False  # bfloat16 autocast (CPU or CUDA); pooling and losses stay float32
    channels_last: bool = False  # channels_last memory format for the conv layers
    seed: int = 0  # model init, sampling order and augmentation
    num_workers: int = 0  # DataLoader worker processes per training process
    log_every: int = 10  # steps between metrics.jsonl lines
    checkpoint_every: int = 500  # steps between resumable checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    eval_max_samples: int | None = None  # cap on val keyframes per evaluation (None = all)
    init_weights: Path | None = None  # optional weights (.safetensors / official .pth) to start
    resume: bool = False  # continue from the newest checkpoint in out_dir/checkpoints
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"

    def __post_init__(self) -> None:
        if not self.train_dirs:
            raise ConfigError("give at least one training dataset folder")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of steps or epochs")
        for name in ("steps", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.lr <= 0 or min(self.weight_decay, self.depth_weight, self.lovasz_weight) < 0:
            raise ConfigError("lr must be > 0, weight_decay, depth_weight, lovasz_weight >= 0")
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.log_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("log_every and keep_checkpoints must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, `train_dirs` as a list of strings."""
        out: dict[str, Any] = {}
        for k, v in dataclasses.asdict(self).items():
            if isinstance(v, tuple):
                v = [str(x) for x in v]
            out[k] = str(v) if isinstance(v, Path) else v
        return out


@dataclass(frozen=True)
class TrainResult:
    """What a run produced (rank 0 holds the evaluation)."""

    steps: int  # optimiser steps done in total (including resumed ones)
    losses: tuple[float, ...]  # total loss of each step run in this call (this rank)
    miou: MiouResult | None  # final evaluation, None without val_dir or on ranks > 0
    weights: Path  # final weights file
    interrupted: bool = False  # stopped early by Ctrl-C (a checkpoint was written)


# --- model wrapper -----------------------------------------------------------------------------
class TrainStep(nn.Module):
    """forward(batch) -> (logits (B, X, Y, Z, cls), depth logits (B, N, D, fH, fW) of the key
    frame).

    One module call so DistributedDataParallel sees the whole graph; `net` is the FlashOCC
    model whose weights are saved. Single-frame models: the stages of `FlashOCC.forward`, but
    the depth logits are kept for the depth loss (a BCE on logits stays finite when saturated).
    4D-stereo models: `forward_stereo4d_train` over the batch's (t, t−1, t−2) keyframes.
    """

    def __init__(self, net: FlashOCC) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        if self.net.cfg.temporal:
            return forward_stereo4d_train(self.net, temporal_frames(batch))
        calib = batch_calibration(batch)
        features = self.net.encode_images(batch["images"])  # (B, N, C, fH, fW)
        vt = self.net.img_view_transformer
        depth_logits, context = vt.depth_logits_context(features.feat, calib)
        depth = depth_logits.float().softmax(dim=2)  # (B, N, D, fH, fW), as vt.depth_context
        bev = vt.splat(depth, context, vt.geometry.indices(calib))  # (B, Cctx·Dz, Y, X)
        return self.net.bev_to_logits(self.net.frame_bev(bev)), depth_logits


def lr_factor(step: int, cfg: TrainConfig, total: int) -> float:
    """Multiplier of cfg.lr at `step`: linear warm-up, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _autocast(cfg: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    if cfg.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# --- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    net: FlashOCC,
    dataset: OccupancyDataset,
    device: torch.device,
    bf16: bool = False,
    max_samples: int | None = None,
    num_workers: int = 0,
) -> MiouResult:
    """Occ3D mIoU (mask_camera voxels) of `net` over `dataset` (test-time geometry)."""
    was_training = net.training
    net.eval()
    metric = MiouMetric(net.cfg.num_classes)
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, range(count)), batch_size=1, num_workers=num_workers
    )
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    for batch in tqdm(loader, desc="eval", unit="frame", leave=False, dynamic_ncols=True):
        b = _to_device(batch, device)
        with ctx:
            pred = batch_logits(net, b).argmax(dim=-1).to(torch.uint8)  # (1, X, Y, Z)
        metric.add(
            pred[0].cpu().numpy(),
            batch["semantics"][0].numpy(),
            batch["mask_camera"][0].numpy() > 0,
        )
    net.train(was_training)
    return metric.result()


# --- the loop ----------------------------------------------------------------------------------
class _Metrics:
    """Appends JSON lines to metrics.jsonl (main rank only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, **values: Any) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(values) + "\n")


def _batches(
    dataset: OccupancyDataset,
    sampler: DistributedSampler[Any],
    cfg: TrainConfig,
    start_step: int,
    steps_per_epoch: int,
) -> Iterator[dict[str, Tensor]]:
    """Endless batches from `start_step` on, epoch by epoch (exact mid-epoch resume)."""
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        keys = EpochKeys(list(sampler), epoch, skip * cfg.batch_size)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=keys,
            num_workers=cfg.num_workers,
            drop_last=True,
            persistent_workers=False,
        )
        yield from loader
        epoch, skip = epoch + 1, 0


class StepLosses(NamedTuple):
    """Float values of one optimiser step."""

    loss: float  # occ + depth_weight · depth + lovasz_weight · lovasz
    occ: float
    depth: float
    lovasz: float  # 0 when lovasz_weight is 0
    grad_norm: float  # before clipping (nan without clipping)


def _optimise(
    step_module: nn.Module,
    net: FlashOCC,
    batch: Mapping[str, Tensor],
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    bins: Tensor,
    class_weight: Tensor | None = None,
) -> StepLosses:
    """Forward, losses, backward, clip, optimizer step for one batch."""
    with _autocast(cfg, bins.device):
        logits, depth_logits = step_module(batch)
    loss_occ = occupancy_loss(logits, batch["semantics"], batch["mask_camera"], class_weight)
    loss = loss_occ
    loss_depth = torch.zeros((), device=bins.device)
    if cfg.depth_weight > 0:
        target = depth_targets(batch["depth"], bins, net.cfg.downsample)
        loss_depth = depth_loss(depth_logits, target)
        loss = loss + cfg.depth_weight * loss_depth
    loss_lovasz = torch.zeros((), device=bins.device)
    if cfg.lovasz_weight > 0:
        loss_lovasz = lovasz_softmax_loss(logits, batch["semantics"], batch["mask_camera"])
        loss = loss + cfg.lovasz_weight * loss_lovasz
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    grad_norm = float("nan")
    if cfg.grad_clip > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip))
    optimizer.step()
    loss_value, occ, depth, lovasz = (
        float(v.detach()) for v in (loss, loss_occ, loss_depth, loss_lovasz)
    )
    return StepLosses(loss_value, occ, depth, lovasz, grad_norm)


class _StopOnInterrupt:
    """Within the block, a first Ctrl-C asks to stop at the next step boundary (so a clean
    checkpoint can be written); a second one aborts. Single process, main thread only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after this step (press again to abort)")

    def __enter__(self) -> _StopOnInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


def train(cfg: TrainConfig, command: str = "") -> TrainResult:
    """Run (or resume) training as configured; rank 0 writes weights, checkpoints and record."""
    t_start = time.monotonic()
    dd = setup_distributed(cfg.device)
    try:
        return _train(cfg, dd, command, t_start)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, dd: Dist, command: str, t_start: float) -> TrainResult:
    model_cfg: ModelConfig = load_model_config(cfg.model_config)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    with_depth = cfg.depth_weight > 0
    train_set = OccupancyDataset(
        cfg.train_dirs, model_cfg, True, cfg.seed, with_depth=with_depth, augment=cfg.augment
    )
    val_set = OccupancyDataset(cfg.val_dir, model_cfg, False, cfg.seed) if cfg.val_dir else None
    sampler: DistributedSampler[Any] = DistributedSampler(
        range(len(train_set)),  # type: ignore[arg-type]
        num_replicas=dd.world_size,
        rank=dd.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{len(train_set)} training keyframes are too few for batch {cfg.batch_size} on "
            f"{dd.world_size} processes"
        )
    total = cfg.steps if cfg.steps is not None else (cfg.epochs or 1) * steps_per_epoch

    net = build_model(model_cfg)
    if cfg.init_weights is not None and not cfg.resume:
        load_checkpoint_into(net, cfg.init_weights)
    start_step = 0
    state: dict[str, Any] | None = None
    if cfg.resume:
        found = checkpoint_dirs(cfg.out_dir)
        if not found:
            raise ConfigError(f"--resume: no checkpoint in {cfg.out_dir / 'checkpoints'}")
        load_checkpoint_into(net, found[-1] / WEIGHTS_FILE)
        state = load_state(found[-1] / STATE_FILE)
        start_step = int(state["step"])
        log.info("resuming from %s (step %d)", found[-1], start_step)
    net.to(dd.device).train()
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cfg.bf16 and dd.device.type == "cpu" and dd.main:
        warn_if_slow_bf16("--bf16")
    step_module: nn.Module = TrainStep(net)
    if dd.enabled:
        step_module = DistributedDataParallel(
            step_module, device_ids=[dd.device.index] if dd.device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, total))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])

    if dd.main:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _Metrics(cfg.out_dir / "metrics.jsonl" if dd.main else None)
    bins = depth_values(model_cfg).to(dd.device)
    class_weight: Tensor | None = None
    if cfg.class_balance:
        counts = class_counts(train_set.data, model_cfg.num_classes)
        class_weight = class_balance_weights(counts).to(dd.device)
        log.info("class_balance weights %s", np.round(class_weight.cpu().numpy(), 4).tolist())
    keep = cfg.keep_checkpoints
    losses: list[float] = []
    miou: MiouResult | None = None
    log.info(
        "training %s: %d keyframes, %d steps (%d per epoch), world size %d, device %s",
        model_cfg.name, len(train_set), total, steps_per_epoch, dd.world_size, dd.device,
    )  # fmt: skip
    batches = _batches(train_set, sampler, cfg, start_step, steps_per_epoch)
    bar = tqdm(
        total=total, initial=start_step, desc="train", unit="step", disable=not dd.main,
        dynamic_ncols=True,
    )  # fmt: skip
    t_loop = time.monotonic()
    done = start_step
    with _StopOnInterrupt(enabled=not dd.enabled) as stop:
        for step in range(start_step, total):
            batch = _to_device(next(batches), dd.device)
            sl = _optimise(step_module, net, batch, cfg, optimizer, bins, class_weight)
            scheduler.step()
            done = step + 1
            if not math.isfinite(sl.loss):
                raise FloatingPointError(f"loss is {sl.loss} at step {done}")
            losses.append(sl.loss)
            lr = scheduler.get_last_lr()[0]
            shown = {"loss": sl.loss, "occ": sl.occ, "depth": sl.depth}
            if cfg.lovasz_weight > 0:
                shown["lovasz"] = sl.lovasz
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()} | {"lr": f"{lr:.2e}"})
            bar.update(1)
            if done % cfg.log_every == 0 or done == total:
                metrics.write(
                    step=done, loss=sl.loss, loss_occ=sl.occ, loss_depth=sl.depth,
                    loss_lovasz=sl.lovasz, lr=lr, grad_norm=sl.grad_norm,
                    s_per_step=(time.monotonic() - t_loop) / (done - start_step),
                )  # fmt: skip
            if stop.requested or done == total:
                break
            if dd.main and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save_checkpoint(cfg.out_dir, done, net, optimizer, scheduler, keep)
            if val_set is not None and cfg.eval_every and done % cfg.eval_every == 0:
                _eval_and_log(net, val_set, cfg, dd, done, metrics)
                if dd.enabled:
                    dist.barrier()
    bar.close()
    loop_s = time.monotonic() - t_loop
    if done < total:  # stopped by an interrupt (single process only)
        save_checkpoint(cfg.out_dir, done, net, optimizer, scheduler, keep)
        log.warning("interrupted after step %d of %d; continue with --resume", done, total)
        return TrainResult(done, tuple(losses), None, cfg.out_dir / WEIGHTS_FILE, True)

    weights = cfg.out_dir / WEIGHTS_FILE
    param_hashes = replica_hashes(net, dd, parameters_only=True)
    sync_buffers(net, dd)
    hashes = replica_hashes(net, dd)
    if len(set(hashes)) > 1:
        log.warning("DDP replicas differ after training: %s", hashes)
    if dd.main:
        save_checkpoint(cfg.out_dir, total, net, optimizer, scheduler, keep)
        save_flashocc(net, model_cfg, weights)
        if val_set is not None:
            miou = _eval_and_log(net, val_set, cfg, dd, total, metrics)
        _write_record(
            cfg,
            dd,
            command,
            train_set,
            val_set,
            total,
            start_step,
            loop_s,
            t_start,
            losses,
            miou,
            {"replica_sha256": hashes, "replica_param_sha256": param_hashes},
        )
    if dd.enabled:
        dist.barrier()
    return TrainResult(total, tuple(losses), miou, weights)


def _eval_and_log(
    net: FlashOCC,
    val_set: OccupancyDataset,
    cfg: TrainConfig,
    dd: Dist,
    step: int,
    metrics: _Metrics,
) -> MiouResult | None:
    if not dd.main:
        return None
    # float32 even after bf16 training: the node's default precision, so the recorded mIoU is the
    # one a user gets (bf16 scoring of the same weights moved a 64-frame mIoU by up to 1.8 points)
    result = evaluate(
        net, val_set, dd.device, bf16=False, max_samples=cfg.eval_max_samples,
        num_workers=cfg.num_workers,
    )  # fmt: skip
    log.info("step %d: mIoU %.2f over %d frames\n%s", step, 100 * result.miou,
             result.num_frames, result.table())  # fmt: skip
    metrics.write(step=step, miou=result.miou, eval_frames=result.num_frames)
    return result


def _write_record(
    cfg: TrainConfig,
    dd: Dist,
    command: str,
    train_set: OccupancyDataset,
    val_set: OccupancyDataset | None,
    total: int,
    start_step: int,
    loop_s: float,
    t_start: float,
    losses: list[float],
    miou: MiouResult | None,
    hashes: dict[str, list[str]],
) -> None:
    ran = total - start_step
    record: dict[str, Any] = {
        "command": command,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "model_config": load_model_config(cfg.model_config).to_dict(),
        "world_size": dd.world_size,
        **hashes,
        "device": str(dd.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_keyframes": len(train_set),
        "train_scenes": len(train_set.data.scenes),
        "val_keyframes": len(val_set) if val_set is not None else 0,
        "val_scenes": len(val_set.data.scenes) if val_set is not None else 0,
        "steps": total,
        "resumed_from_step": start_step,
        "images_per_step": cfg.batch_size * dd.world_size * len(train_set.cfg.camera_names),
        "train_time_s": round(loop_s, 1),
        "s_per_step": round(loop_s / ran, 4) if ran else None,
        "wall_time_s": round(time.monotonic() - t_start, 1),
        "final_loss": losses[-1] if losses else None,
        "final_loss_mean_last_50": float(np.mean(losses[-50:])) if losses else None,
        "miou": miou.miou if miou is not None else None,
        "eval_frames": miou.num_frames if miou is not None else 0,
        "per_class_iou": (
            {
                n: (None if np.isnan(v) else float(v))
                for n, v in zip(CLASS_NAMES, miou.iou, strict=True)
            }
            if miou is not None
            else None
        ),
    }
    (cfg.out_dir / "train_record.json").write_text(json.dumps(record, indent=1) + "\n")


__all__ = [
    "Dist",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "checkpoint_dirs",
    "evaluate",
    "lr_factor",
    "save_checkpoint",
    "setup_distributed",
    "state_hash",
    "train",
]
