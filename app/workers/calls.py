"""Libvirt calls for requests and jobs, in any process, and the asking side of the worker link.

A call runs on the host's sync connection when this process syncs the host (a worker, or a web
app with its worker inside, as in tests), else on a connection of this process's own: opened at
the first call, kept, and dropped when libvirt closes it. So a request never waits behind a
sync, and a web process needs no worker to act on a host. Each call is bounded by a timeout, so
that a hung host costs a request a timeout, not forever.

Syncs and jobs go to the workers through the database (app.services.work_requests): a refresh
raises the host's request counter and may wait until a worker has answered it; a job's work is
stored in its row and a worker takes it. `wake` tells a worker at once (one in this process, or
the child `virtdeck serve` started); another worker finds the request at its next poll.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CallTimeout
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import HostUnreachable
from app.services import hosts as host_service
from app.services import work_requests
from app.virt.connection import HostConnection

T = TypeVar("T")
# How often a refresh that waits looks whether a worker has answered it.
ANSWER_POLL = 0.05


@dataclass
class _Own:
    """A connection of this process's own, and the calls using it now: it is closed only once
    none does (libvirt-python crashes on a connection closed under a call)."""

    conn: HostConnection
    users: int = 0
    dropped: bool = False


def _nobody(_host_id: int) -> HostConnection | None:
    return None


def _nothing() -> None:
    return None


class HostLink:
    """HostCalls and JobQueue for this process (app.services.ports)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        local: Callable[[int], HostConnection | None] = _nobody,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._local = local
        self._wake = wake or _nothing
        self._own: dict[int, _Own] = {}
        self._lock = threading.Lock()
        self._calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="virt-call")

    # --- calls ---

    def call(
        self, host_id: int, fn: Callable[[HostConnection], T], *, timeout: float | None = None
    ) -> T:
        """Run fn on a connection to the host; HostUnreachable if none opens or no answer comes
        in time. The timeout defaults to the call_timeout setting; jobs pass a longer one."""
        timeout = timeout or self._settings.call_timeout
        future = self._calls.submit(self._run, host_id, fn)
        try:
            return future.result(timeout=timeout)
        except CallTimeout as exc:
            raise HostUnreachable(f"the host did not answer within {timeout:g} s") from exc

    def _run(self, host_id: int, fn: Callable[[HostConnection], T]) -> T:
        shared = self._local(host_id)
        if shared is not None:
            return fn(shared)
        own = self._take(host_id)
        try:
            return fn(own.conn)
        except HostUnreachable:
            self._drop(host_id, own)
            raise
        finally:
            self._give_back(own)

    def _take(self, host_id: int) -> _Own:
        # The worker's word on the host: a call to one it cannot reach would only wait.
        with self._sessions() as session:
            host = host_service.get_host(session, host_id)
            uri, connection = host.uri, host.connection
        if connection != "connected":
            raise HostUnreachable("the host is not connected; try again when it is")
        with self._lock:
            own = self._own.get(host_id)
            if own is not None:
                own.users += 1
                return own
        holder: list[_Own] = []
        conn = host_service.open_connection(
            uri, self._settings, on_close=lambda _reason: holder and self._drop(host_id, holder[0])
        )
        fresh = _Own(conn, users=1)
        holder.append(fresh)
        with self._lock:
            own = self._own.setdefault(host_id, fresh)
            if own is not fresh:  # another call opened one meanwhile: use that one
                own.users += 1
        if own is not fresh:
            conn.close()
        return own

    def _give_back(self, own: _Own) -> None:
        with self._lock:
            own.users -= 1
            close = own.dropped and own.users == 0
        if close:
            own.conn.close()

    def _drop(self, host_id: int, own: _Own) -> None:
        """Stop using this connection (libvirt closed it, or the host is gone); it is closed
        once no call uses it."""
        with self._lock:
            if self._own.get(host_id) is own:
                del self._own[host_id]
            if own.dropped:
                return
            own.dropped = True
            close = own.users == 0
        if close:  # not on libvirt's event loop thread, which called us
            self._calls.submit(own.conn.close)

    # --- the worker link ---

    def refresh(self, host_id: int, *, wait: float = 0.0) -> bool:
        """Ask a worker to sync the host; with wait, whether a sync that began after this
        request finished within that many seconds."""
        with transaction(self._sessions) as session:
            request = work_requests.request_sync(session, host_id)
        self._wake()
        deadline = time.monotonic() + wait
        while wait > 0:
            with self._sessions() as session:
                if work_requests.answered(session, host_id) >= request:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(ANSWER_POLL)
        return False

    def add(self, host_id: int) -> None:
        """A host was registered: a worker finds it at its next look and starts with a full
        read (no sync request: that would ask for a second one right after)."""
        del host_id
        self._wake()

    def remove(self, host_id: int) -> None:
        """A host was removed: close this process's connection to it; its worker stops."""
        with self._lock:
            own = self._own.get(host_id)
        if own is not None:
            self._drop(host_id, own)
        self._wake()

    def submit(self, job_id: int) -> None:
        """A job's work is stored in its row: a worker takes it at its next look."""
        del job_id  # the row says everything; the worker takes the oldest first
        self._wake()

    def stop(self) -> None:
        """Close this process's connections."""
        self._calls.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            owned, self._own = list(self._own.values()), {}
            for own in owned:
                own.dropped = True
        for own in owned:
            if own.users == 0:
                own.conn.close()
