"""The host workers of a worker process: one per registered host, syncing those whose lease this
instance holds, and a watchdog for hosts that hang."""

import logging
import threading
import time
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
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

    def start(self) -> None:
        """Start renewing the leases and watching for stalls; which hosts have workers is the
        worker loop's call to follow()."""
        self._watchdog.start()
        self._leases.start()

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
                self._claim()
            except Exception:
                log.exception("host lease round failed")

    def leading(self) -> set[int]:
        """The hosts whose lease this instance holds (it syncs them)."""
        return {h for h, w in list(self._workers.items()) if w.leader.is_set()}

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

    def connection(self, host_id: int) -> HostConnection | None:
        """The host's open sync connection when this instance syncs it (calls share it)."""
        worker = self._workers.get(host_id)
        if worker is None or not worker.leader.is_set():
            return None
        return worker.connection

    def follow(self, registered: dict[int, str]) -> None:
        """Workers for exactly these hosts (id: URI), at once rather than at the next lease
        round: a host just registered through a web process starts syncing without delay."""
        with self._lock:
            known = set(self._workers)
        if known == set(registered):
            return
        for host_id in known - set(registered):
            self.remove(host_id)
        new = [self._new_worker(h, uri) for h, uri in registered.items() if h not in known]
        self._claim()
        for worker in new:
            if worker is not None:
                worker.start()

    def ask(self, host_id: int) -> int | None:
        """Ask the host's worker for a sync if this instance syncs the host: the generation
        that answers it, else None (another instance answers)."""
        worker = self._workers.get(host_id)
        if worker is None or not worker.leader.is_set():
            return None
        return worker.request_sync()

    def reached(self, host_id: int, generation: int) -> bool:
        """Whether the host's worker has finished a sync of this generation."""
        worker = self._workers.get(host_id)
        return worker is not None and worker.generation >= generation

    def stop(self) -> None:
        """Stop every worker and hand the leases back (another instance takes over at once)."""
        self._stopping.set()
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()
        # Two seconds for all of them, not each: the leases are handed back within the worker
        # process's STOP_LIMIT however many hosts are busy.
        deadline = time.monotonic() + 2
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        try:
            with transaction(self._sessions) as session:
                lease_service.release(session, self.instance)
        except Exception:
            log.exception("could not release the host leases")
