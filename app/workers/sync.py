"""The workers of every registered host: which this instance syncs (leases), a watchdog for
hosts that hang, and libvirt calls for requests, bounded by a timeout."""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CallTimeout
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import HostUnreachable
from app.services import hosts as host_service
from app.services import leases as lease_service
from app.virt.connection import HostConnection
from app.workers.host_worker import HostWorker, WorkerStats

log = logging.getLogger(__name__)
T = TypeVar("T")


class SyncManager:
    """Owns the workers of every registered host."""

    def __init__(
        self, *, sessions: sessionmaker[Session], settings: Settings, instance: str
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self.instance = instance
        self._workers: dict[int, HostWorker] = {}
        self._leases = threading.Thread(target=self._keep_leases, name="sync-leases", daemon=True)
        self._last_claim = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="sync-watchdog", daemon=True)
        # Requests call libvirt here, so that a hung host costs a request a timeout, not forever.
        self._calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="virt-call")

    def start(self) -> None:
        """Start a worker for each host in the database; sync those whose lease we get."""
        self._reconcile()
        self._watchdog.start()
        self._leases.start()

    def _reconcile(self) -> None:
        """Workers for exactly the registered hosts (another instance may add or remove some),
        leading those whose lease this instance holds."""
        with self._sessions() as session:
            registered = {h.id: h.uri for h in host_service.list_hosts(session)}
        for host_id in set(self._workers) - set(registered):
            self.remove(host_id)
        new = [self._new_worker(host_id, uri) for host_id, uri in registered.items()]
        self._claim()
        for worker in new:
            if worker is not None:
                worker.start()

    def _claim(self) -> None:
        try:
            with transaction(self._sessions) as session:
                held = lease_service.claim(session, self.instance, ttl=self._settings.lease_ttl)
            self._last_claim = time.monotonic()
        except Exception:
            log.exception("could not renew the host leases")
            if time.monotonic() - self._last_claim < self._settings.lease_ttl:
                return
            held = set()  # ours have expired: another instance may be syncing them now
        for host_id, worker in list(self._workers.items()):
            worker.lead(host_id in held)

    def _keep_leases(self) -> None:
        while not self._stopping.wait(self._settings.lease_renew):
            try:
                self._reconcile()
            except Exception:
                log.exception("host lease round failed")

    def worker_stats(self) -> dict[int, WorkerStats]:
        """Each host's sync and event figures, for the hosts this instance syncs."""
        return {h: w.stats for h, w in self._workers.items() if w.leader.is_set()}

    def _watch(self) -> None:
        """A worker blocked inside libvirt cannot report itself; this thread does it for it."""
        timeout = self._settings.stall_timeout
        while not self._stopping.wait(min(1.0, timeout / 4)):
            for worker in list(self._workers.values()):
                try:
                    worker.check_stalled(timeout)
                except Exception:
                    log.exception("watchdog check of host %s failed", worker.host_id)

    def add(self, host_id: int, uri: str) -> None:
        """Start a worker for a new host, syncing it here if its lease is free."""
        worker = self._new_worker(host_id, uri)
        self._claim()
        if worker is not None:
            worker.start()

    def _new_worker(self, host_id: int, uri: str) -> "HostWorker | None":
        """A worker (not started yet) for a host that has none, else None."""
        with self._lock:
            if host_id in self._workers:
                return None
            worker = HostWorker(host_id, uri, sessions=self._sessions, settings=self._settings)
            self._workers[host_id] = worker
        return worker

    def remove(self, host_id: int) -> None:
        """Stop syncing a host."""
        with self._lock:
            worker = self._workers.pop(host_id, None)
        if worker is not None:
            worker.stop()

    def refresh(self, host_id: int, *, wait: float = 0.0) -> bool:
        """Sync a host now; with wait, block up to that many seconds for it to finish."""
        worker = self._workers.get(host_id)
        if worker is None:
            return False
        generation = worker.request_sync()
        return wait > 0 and worker.wait_for(generation, wait)

    def call(
        self, host_id: int, fn: Callable[[HostConnection], T], *, timeout: float | None = None
    ) -> T:
        """Run fn on the host's open connection; HostUnreachable if none or no answer in time.

        The timeout defaults to the call_timeout setting; jobs pass a longer one.
        """
        worker = self._workers.get(host_id)
        connection = worker.connection if worker is not None else None
        if connection is None:
            raise HostUnreachable("the host is not connected; try again when it is")
        future = self._calls.submit(fn, connection)
        timeout = timeout or self._settings.call_timeout
        try:
            return future.result(timeout=timeout)
        except CallTimeout as exc:
            raise HostUnreachable(f"the host did not answer within {timeout:g} s") from exc

    def stop(self) -> None:
        """Stop every worker and hand the leases back (another instance takes over at once)."""
        self._stopping.set()
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout=2)
        self._calls.shutdown(wait=False, cancel_futures=True)
        try:
            with transaction(self._sessions) as session:
                lease_service.release(session, self.instance)
        except Exception:
            log.exception("could not release the host leases")
