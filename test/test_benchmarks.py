"""The benchmark suite runs end to end: `benchmarks/run_all.py --quick` in a subprocess.
In: nothing. Out: pass/fail on the JSON (every row group present, finite ratio or a skip reason).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"1 c2h-vs-3d", "2 bev-pool", "3 markers", "4 node-overhead", "5 cpu-network",
          "6 gpu-network"}  # fmt: skip


@pytest.mark.slow
def test_run_all_quick_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # ~25-40 s on the 2-core machine; generous for a loaded one
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    assert {"cpu", "cores", "torch", "training_running"} <= set(doc["machine"])
    rows = doc["rows"]
    assert {r["group"] for r in rows} == GROUPS
    for r in rows:
        ok = r["ratio"] is not None and math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert ok or (r["skipped"] or "").startswith("skipped:"), r
    assert "machine:" in proc.stdout and "ratio" in proc.stdout
    print(f"run_all --quick took {seconds:.0f} s")
