"""What a job opens that the next job on the same host can use again (its libvirt connection, a
qemu+ssh host's SSH session with the directories it holds there): kept after a job that went well,
handed to one job at a time, and closed once it has waited IDLE_SECONDS, no longer works, or the
worker stops (close_all). A night of backups of one host's guests so opens each once."""

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# How long a kept item waits for the next job on its host before it is closed.
IDLE_SECONDS = 30.0
_pools: list["IdlePool"] = []


class IdlePool(Generic[T]):
    """Items by key (a host's URI), each kept for one next taker."""

    def __init__(self, *, close: Callable[[T], None], usable: Callable[[T], bool]) -> None:
        self._close, self._usable = close, usable
        self._idle: dict[str, list[tuple[T, float]]] = {}  # key: (item, idle since)
        self._lock = threading.Lock()
        _pools.append(self)

    def take(self, key: str, open_new: Callable[[], T]) -> T:
        """A kept item for key that still works (the others are closed), else open_new()."""
        while True:
            with self._lock:
                waiting = self._idle.get(key)
                if not waiting:
                    break
                item, since = waiting.pop()
            if time.monotonic() - since < IDLE_SECONDS and self._usable(item):
                return item
            self._close(item)
        return open_new()

    def give(self, key: str, item: T, *, keep: bool) -> None:
        """The job is done with item: kept for the next job (keep: the job went well), else
        closed."""
        if not keep:
            self._close(item)
            return
        with self._lock:
            self._idle.setdefault(key, []).append((item, time.monotonic()))
        sweep = threading.Timer(IDLE_SECONDS, self.close_idle)
        sweep.daemon = True
        sweep.start()

    def close_idle(self, *, waited: float = IDLE_SECONDS) -> None:
        """Close the kept items that have waited that many seconds (0: all of them)."""
        now, stale = time.monotonic(), []
        with self._lock:
            for waiting in self._idle.values():
                stale += [item for item, since in waiting if now - since >= waited]
                waiting[:] = [(item, since) for item, since in waiting if now - since < waited]
        for item in stale:
            self._close(item)


def close_all() -> None:
    """Close every kept item now (the worker is stopping)."""
    for pool in list(_pools):
        pool.close_idle(waited=0)
