"""Two-process gloo DDP through torchrun: after a few steps both replicas hold equal weights.
In: the tiny generated dataset, the `tiny` and `tiny-stereo` configs.
Out: assertions on the train record's per-rank hashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model_config", ["tiny", "tiny-stereo"])
def test_two_process_gloo_ddp_keeps_replicas_identical(
    tiny_data: Path, tmp_path: Path, model_config: str
) -> None:
    """tiny-stereo: the 4D-stereo step (older frames under no_grad) still gives every
    parameter a gradient each step, as DDP's reducer requires."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "flashocc_ros.tools.train", "--train", str(tiny_data), "--out", str(out),
        "--model-config", model_config, "--steps", "2", "--warmup-steps", "1",
        "--num-workers", "0", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "train_record.json").read_text())
    assert record["world_size"] == 2
    params = record["replica_param_sha256"]  # before any buffer sync: gradients were averaged
    assert len(params) == 2 and params[0] == params[1]
    full = record["replica_sha256"]  # incl. BatchNorm statistics, synced from rank 0
    assert len(full) == 2 and full[0] == full[1]
    assert record["images_per_step"] == 2 * 6
