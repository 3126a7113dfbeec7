"""Two-process DDS round trips through scripts/dds_check.py (publisher and receiver processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

DDS_CHECK = Path(__file__).resolve().parents[2] / "scripts" / "dds_check.py"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PairResult:
    publisher_rc: int
    receiver_rc: int
    publisher_out: str
    receiver_out: str

    def report(self) -> str:
        return (
            f"publisher exit {self.publisher_rc}:\n{self.publisher_out}\n"
            f"receiver exit {self.receiver_rc}:\n{self.receiver_out}"
        )


DdsPair = Callable[..., PairResult]


@pytest.fixture
def dds_pair(ros_env: dict[str, str]) -> DdsPair:
    """Run a receiver and a publisher as two OS processes; both see the same fresh domain."""

    def run(kind: str, topic: str, seed: int, receiver_seed: int | None = None) -> PairResult:
        common = ["--kind", kind, "--topic", topic, "--timeout", "30"]
        procs = {}
        for role, role_seed in (("receive", receiver_seed), ("publish", seed)):
            cmd = [sys.executable, str(DDS_CHECK), role, *common, "--seed"]
            cmd.append(str(seed if role_seed is None else role_seed))
            procs[role] = subprocess.Popen(
                cmd,
                env=ros_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        outs = {}
        try:
            for role, proc in procs.items():
                outs[role] = proc.communicate(timeout=TIMEOUT_S)[0]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return PairResult(
            procs["publish"].returncode,
            procs["receive"].returncode,
            outs.get("publish", ""),
            outs.get("receive", ""),
        )

    return run
