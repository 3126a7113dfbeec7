"""A small or read-only file system for tests of what the tools do when the disk is full.
In: a command line and a folder (with any files it should start with). Out: the command's result,
run with that folder on a tmpfs of a given size (or read-only); what it left there is copied back.

Where unprivileged mount namespaces work (`unshare -rm`, Linux; checked once), the folder is a
real tmpfs and writes fail with ENOSPC / EROFS exactly as on a full or read-only disk. Elsewhere
(CI kernels may forbid user namespaces) "full" is a file-size limit (`ulimit -f`: EFBIG) and
"read-only" a folder without write permission (impossible as root: such a test is skipped).
`kind()` says which is in use; FLASHOCC_SMALL_DISK=rlimit forces the second way (to check that
the tests hold there too). Importable from every test folder (test/ is on sys.path).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest


@functools.cache
def mount_namespaces() -> bool:
    """True when this user may mount a tmpfs in a new user + mount namespace."""
    if os.environ.get("FLASHOCC_SMALL_DISK") == "rlimit":
        return False
    with tempfile.TemporaryDirectory() as where:
        try:
            proc = subprocess.run(
                ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', where],
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return proc.returncode == 0


def kind() -> str:
    """'tmpfs' (real ENOSPC / EROFS) or 'rlimit' (EFBIG, permissions)."""
    return "tmpfs" if mount_namespaces() else "rlimit"


# Run inside the namespace: stash the folder's files, mount the tmpfs over it, put them back,
# optionally make it read-only, run the command, then copy what it left back to the stash.
_SCRIPT = """
opts=$1 disk=$2 stash=$3 ro=$4; shift 4
cp -a "$disk/." "$stash/" || exit 97
mount -t tmpfs -o "$opts" tmpfs "$disk" || exit 97
cp -a "$stash/." "$disk/" || exit 97
if [ "$ro" = 1 ]; then mount -o remount,ro "$disk" || exit 97; fi
"$@"
rc=$?
rm -rf "$stash" && mkdir "$stash" && cp -a "$disk/." "$stash/"
exit $rc
"""


def run_on_small_disk(
    argv: Sequence[str],
    disk: Path,
    *,
    size_kib: int = 1024,
    read_only: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `disk` on a tmpfs of `size_kib` KiB (read-only: as it is, unwritable).
    Afterwards `disk` holds what the command left there. Output is captured as text."""
    disk.mkdir(parents=True, exist_ok=True)
    if mount_namespaces():
        stash = disk.with_name(disk.name + ".stash")
        stash.mkdir()
        wrapper = ["unshare", "-rm", "sh", "-c", _SCRIPT, "sh", f"size={size_kib}k"]
        wrapper += [str(disk), str(stash), "1" if read_only else "0", *argv]
        proc = subprocess.run(
            wrapper, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode != 97, f"could not set up the tmpfs: {proc.stderr}"
        shutil.rmtree(disk)
        stash.rename(disk)
        return proc
    if read_only:
        if os.geteuid() == 0:
            pytest.skip("no mount namespaces here, and root ignores write permissions")
        for folder, _, _ in os.walk(disk):
            os.chmod(folder, 0o555)
        try:
            return subprocess.run(
                list(argv), env=env, capture_output=True, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            for folder, _, _ in os.walk(disk):
                os.chmod(folder, 0o755)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (size_kib * 1024, size_kib * 1024))

    return subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, preexec_fn=limit,
    )  # fmt: skip
