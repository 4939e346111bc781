"""How a worker process's hosts take turns reading every guest: a few at a time, and, while
hosts load (their first full read after connecting), all guests before the rest of the work."""

import contextlib
import threading
from collections.abc import Iterator

# How many hosts of a process read every guest's XML at once, and how long one waits for a turn.
READ_SLOTS = 10
READ_SLOT_WAIT = 2.0


class Reconciles:
    """The full reads of a process's hosts. At most `slots` read at once: fifty reading
    together held every guest's XML at the same time (memory the process keeps); one that waited
    READ_SLOT_WAIT (a hung host holds a slot) reads anyway. And guests come first while hosts
    load: a loaded host's overcommit figures and snapshots, and its periodic passes, wait while
    others load, so when a worker starts or many hosts are registered at once every guest is in
    the database sooner (ten hosts of 500: 1.8 s, not 2.1 s). Later full reads (a refresh, the
    periodic reconcile) make nobody wait."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._reading = 0
        self._loading = 0  # first reads, reading or waiting for a slot
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self, *, loading: bool) -> Iterator[None]:
        """A turn to read and store every guest of a host; `loading`: its first since it
        connected."""
        with self._changed:
            self._loading += loading
            self._changed.wait_for(lambda: self._reading < self._slots, READ_SLOT_WAIT)
            self._reading += 1
        try:
            yield
        finally:
            with self._changed:
                self._reading -= 1
                self._loading -= loading
                self._changed.notify_all()

    def busy(self) -> bool:
        """Whether a host is loading."""
        with self._changed:
            return self._loading > 0

    def settled(self, timeout: float) -> bool:
        """Wait up to timeout seconds until no host is loading; whether none is."""
        with self._changed:
            return self._changed.wait_for(lambda: self._loading == 0, timeout)


RECONCILES = Reconciles(READ_SLOTS)
