"""SIGINT and SIGTERM as a request to stop, for the command-line executables (player, recorder).
In: callbacks to run on the first signal. Out: a context manager whose `received` names the signal.

Callers start rclpy without its own signal handlers (`rclpy.init(signal_handler_options=NO)`):
those end a spinning executor with ExternalShutdownException or KeyboardInterrupt wherever it is,
a traceback on every `kill` and possibly half a file. Here a signal only sets a flag and calls the
registered callbacks (each must just set a flag or an event); the main loop ends at its next check
and closes its files in order. A second signal while stopping does the same again (harmless).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

LOG = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Within the block, SIGINT/SIGTERM set `event` and call the callbacks added with `add`."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback` on a stop request (at once if one came already)."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            LOG.info("%s received: stopping", self.received)
        self.event.set()
        for callback in self._callbacks:
            callback()

    def __enter__(self) -> StopSignals:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
