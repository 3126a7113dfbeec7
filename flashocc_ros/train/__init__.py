"""Training of FlashOCC on world dataset folders (single process or torchrun DDP).
In: dataset folders + `TrainConfig`. Out: safetensors weights, resumable checkpoints, a record.
"""

from __future__ import annotations

from flashocc_ros.train.trainer import TrainConfig, TrainResult, evaluate, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
