"""A rosbag2 (mcap) writer whose bag stays readable when the disk fills up or writing stops early.
In: serialised messages per topic (`write`), then `close()` on every exit path. Out: a bag folder
that `rosbags` opens, holding every message up to the last chunk that reached the disk.

rosbags' `Writer` gathers messages in chunks of about 1 MiB and writes the bag's summary and
metadata.yaml only in `close()`; a bag whose close failed (no space left for the summary) cannot
be opened at all. This wrapper
- flushes each completed chunk and remembers the file offset and message counts after it (the
  last *durable point*);
- keeps a reserve file in the bag folder (`RESERVE_BASE` plus `RESERVE_PER_CHUNK` per chunk,
  allocated on the disk), deleted just before closing, so the summary and metadata.yaml find
  room on a full disk;
- after a failed write or close, truncates the mcap file back to the last durable point and
  closes from there: the messages of the chunk that did not fit are lost, all before it stay.
It reaches into rosbags' McapWriter (its file, chunk list, pending chunk and counters); the
rosbags version is pinned in requirements.txt and tests/test_durable_bag.py covers the rewind.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk

LOG = logging.getLogger(__name__)
RESERVE_NAME = ".flashocc-close-reserve"  # deleted by close(); rosbags ignores other files
RESERVE_BASE = 256 * 1024  # bytes: summary records, metadata record, metadata.yaml
RESERVE_PER_CHUNK = 128  # bytes: one chunk index record in the summary (about 90)
_RESERVE_STEP = 64 * 1024  # grow the reserve in steps of this many bytes


@dataclass(frozen=True)
class _DurablePoint:
    """What the bag holds on disk after a flushed chunk (nothing pending)."""

    offset: int  # bytes of the mcap file
    chunks: int  # chunk index records
    storage: dict[str, Any]  # McapWriter counters
    writer: dict[str, Any]  # Writer counters


_STORAGE_COUNTERS = ("channel_stats", "message_start_time", "message_end_time")
_WRITER_COUNTERS = ("counts", "min_timestamp", "max_timestamp")


def _allocate(path: Path, size: int) -> None:
    """Make `path` hold `size` bytes of real disk space (not a sparse file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            have = os.fstat(fd).st_size
            os.lseek(fd, have, os.SEEK_SET)
            os.write(fd, bytes(max(0, size - have)))
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableBagWriter:
    """A new mcap bag at `path` (refused if it exists). Call `close()` on every exit path.

    `write` raises the OSError of a full or read-only disk (and remembers it in `failed`); the
    caller stops writing and calls `close()`, which leaves the bag readable as described above.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.failed: OSError | None = None
        self.messages = 0  # written without an error (durable once their chunk is flushed)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._reserve = self.path / RESERVE_NAME
        self._reserved = 0
        self._point: _DurablePoint | None = None
        try:
            self._grow_reserve(RESERVE_BASE)
        except OSError:  # no room even to start: remove the folder this writer just made
            mcap = self._storage().path
            self._writer.abort()
            for made in (self._reserve, mcap):
                made.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()
            raise

    def _storage(self) -> McapWriter:
        storage = self._writer.storage
        if not isinstance(storage, McapWriter):
            raise RuntimeError(f"bag {self.path} is not open")
        return storage

    def _grow_reserve(self, needed: int) -> None:
        if needed > self._reserved:
            size = needed + _RESERVE_STEP
            _allocate(self._reserve, size)
            self._reserved = size

    def _mark_durable(self) -> None:
        storage = self._storage()
        storage.bio.flush()
        self._point = _DurablePoint(
            offset=storage.bio.tell(),
            chunks=len(storage.chunks),
            storage={k: copy.deepcopy(getattr(storage, k)) for k in _STORAGE_COUNTERS},
            writer={k: copy.deepcopy(getattr(self._writer, k)) for k in _WRITER_COUNTERS},
        )

    def add_connection(self, topic: str, msgtype: str, typestore: Any) -> Any:
        """A connection for `topic`; the message definition comes from `typestore`."""
        conn = self._writer.add_connection(topic, msgtype, typestore=typestore)
        self._mark_durable()
        return conn

    def write(self, connection: Any, stamp_ns: int, data: bytes) -> None:
        """Add one serialised message. OSError when the disk refuses it (see the class)."""
        if self.failed is not None:
            raise self.failed
        storage = self._storage()
        chunks = len(storage.chunks)
        try:
            self._writer.write(connection, stamp_ns, data)
            if len(storage.chunks) != chunks:  # a chunk went to the file: make it durable
                self._mark_durable()
                self._grow_reserve(RESERVE_BASE + RESERVE_PER_CHUNK * len(storage.chunks))
        except OSError as err:
            self.failed = err
            raise
        self.messages += 1

    def close(self) -> None:
        """Write the summary and metadata.yaml; after a disk error, from the last durable
        point. Idempotent. OSError only when even that cannot be written."""
        if self._writer.storage is None:
            return
        self._reserve.unlink(missing_ok=True)  # room for the summary on a full disk
        if self.failed is None:
            try:
                self._writer.close()
                return
            except OSError as err:
                self.failed = err
        self._rewind()
        try:
            self._writer.close()
        except OSError:
            self._writer.abort()
            raise

    def _rewind(self) -> None:
        """Truncate the mcap file to the last durable point and restore the counters there."""
        point, storage = self._point, self._storage()
        if point is None:
            raise RuntimeError(f"bag {self.path}: no durable point to rewind to")
        with contextlib.suppress(OSError):  # flushing what is still buffered may fail again
            storage.bio.close()
        with open(storage.path, "r+b") as f:
            f.truncate(point.offset)
        storage.bio = open(storage.path, "ab")  # noqa: SIM115 - McapWriter closes it
        storage.chunks = storage.chunks[: point.chunks]
        storage.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))
        for key, value in point.storage.items():
            setattr(storage, key, copy.deepcopy(value))
        for key, value in point.writer.items():
            setattr(self._writer, key, copy.deepcopy(value))
        kept = sum(point.writer["counts"].values())
        LOG.warning(
            "bag %s: %s; closed after the %d messages that reached the disk (%d lost)",
            self.path,
            os.strerror(self.failed.errno) if self.failed and self.failed.errno else "error",
            kept,
            self.messages - kept,
        )
        self.messages = kept


__all__ = ["RESERVE_NAME", "DurableBagWriter"]
