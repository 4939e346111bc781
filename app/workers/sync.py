"""A thread per host keeps a libvirt connection and syncs the inventory into the database."""

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
from app.errors import HostUnreachable, NotFound, VirtdeckError
from app.services import hosts as host_service
from app.services import leases as lease_service
from app.services import overcommit as overcommit_service
from app.services.inventory import apply_event, apply_sync, record_host_snapshots
from app.virt import build
from app.virt import overcommit as overcommit_virt
from app.virt import snapshots as snapshots_virt
from app.virt.connection import HostConnection
from app.virt.cpu import from_record
from app.virt.cpu import probe as cpu_probe
from app.virt.types import GuestInfo

log = logging.getLogger(__name__)
T = TypeVar("T")
# A guest's snapshots are read when its state or XML changed, and all of them every Nth sync
# (to catch snapshots made outside virtdeck); virtdeck's own snapshot actions store theirs.
SNAPSHOT_EVERY = 10


class WorkerStats:
    """What /metrics tells about a host's worker: sync durations and event lag."""

    def __init__(self) -> None:
        self.syncs = 0
        self.sync_seconds_total = 0.0
        self.last_sync_seconds = 0.0
        self.events = 0
        self.event_lag_seconds_total = 0.0
        self.last_event_lag_seconds = 0.0

    def synced(self, seconds: float) -> None:
        """A full sync took this long."""
        self.syncs += 1
        self.sync_seconds_total += seconds
        self.last_sync_seconds = seconds

    def event_handled(self, lag: float) -> None:
        """An event's change was in the database this long after libvirt told us."""
        self.events += 1
        self.event_lag_seconds_total += lag
        self.last_event_lag_seconds = lag


class HostWorker(threading.Thread):
    """Connects to one host, syncs it every interval or on demand, reconnects with backoff."""

    def __init__(
        self, host_id: int, uri: str, *, sessions: sessionmaker[Session], settings: Settings
    ) -> None:
        super().__init__(name=f"sync-host-{host_id}", daemon=True)
        self.host_id = host_id
        self.uri = uri
        self._sessions = sessions
        self._settings = settings
        self._conn: HostConnection | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lost: str | None = None
        self._synced = threading.Condition()
        self.generation = 0
        # When the current connect-and-sync attempt began (monotonic), None between attempts.
        self.attempt_started: float | None = None
        self.stall_reported = False
        self._syncs = 0
        # What each guest's state and XML were when its snapshots were last read.
        self._snapshot_marks: dict[str, tuple[str, str]] = {}
        # Guests with an unhandled libvirt event, and when (monotonic) the first one came.
        self._events: dict[str, float] = {}
        self._events_lock = threading.Lock()
        self._sync_due = False
        self._watching = False
        self._cpu_probed = False
        # Set while this instance holds the host's lease: only then does it sync and write.
        self.leader = threading.Event()
        self.stats = WorkerStats()

    def request_sync(self) -> int:
        """Ask for a sync now; returns the generation that will include it."""
        with self._synced:
            target = self.generation + 1
        self._sync_due = True
        self._wake.set()
        return target

    def lead(self, leader: bool) -> None:
        """Start or stop syncing (this instance took or lost the host's lease)."""
        if leader == self.leader.is_set():
            return
        if leader:
            self.leader.set()
            self._sync_due = True
        else:
            self.leader.clear()
            self._lost = self._lost or "the lease went to another instance"
        self._wake.set()

    def _on_event(self, uuid: str, _kind: str) -> None:
        """From libvirt's event loop: a guest changed; the worker re-reads it at once."""
        with self._events_lock:
            self._events.setdefault(uuid, time.monotonic())
        self._wake.set()

    def wait_for(self, generation: int, timeout: float) -> bool:
        """Wait until a sync of at least this generation has completed."""
        with self._synced:
            return self._synced.wait_for(lambda: self.generation >= generation, timeout)

    @property
    def connection(self) -> HostConnection | None:
        """The open connection, if the host is connected."""
        return None if self._lost is not None else self._conn

    def stop(self) -> None:
        """Ask the worker to end and drop its connection."""
        self._stopping.set()
        self._wake.set()

    def _on_close(self, reason: str) -> None:
        self._lost = reason
        self._wake.set()

    def run(self) -> None:
        backoff = self._settings.reconnect_min
        due = 0.0  # when (monotonic) the next full sync is due
        while not self._stopping.is_set():
            self._wake.clear()
            if not self.leader.is_set():
                delay, backoff = self._stand_by(backoff)
                if self._conn is not None:  # a refresh asked here is answered by the leader's
                    with self._synced:  # syncs; this instance only needs its connection up
                        self.generation += 1
                        self._synced.notify_all()
                self._wake.wait(delay)
                continue
            full = self._sync_due or time.monotonic() >= due or self._conn is None
            self._sync_due = False
            self.attempt_started, self.stall_reported = time.monotonic(), False
            try:
                if full or self._lost is not None:
                    self._sync_once()
                    due = time.monotonic() + self._settings.sync_interval
                else:
                    self._apply_events()
                backoff = self._settings.reconnect_min
            except VirtdeckError as exc:
                self._drop_connection()
                self._record_unreachable(exc.message)
                due, backoff = (
                    time.monotonic() + backoff,
                    min(backoff * 2, self._settings.reconnect_max),
                )
            except Exception:
                log.exception("sync of host %s failed", self.host_id)
                due = time.monotonic() + self._settings.sync_interval
            self.attempt_started = None
            if self._events and self._conn is not None and not self._wake.is_set():
                continue
            self._wake.wait(max(0.0, due - time.monotonic()))
        self._drop_connection()

    def _stand_by(self, backoff: float) -> tuple[float, float]:
        """Without the lease: keep a connection for request-time calls, write nothing."""
        if self._lost is not None:
            self._lost = None
            self._drop_connection()
        if self._conn is not None:
            return self._settings.sync_interval, self._settings.reconnect_min
        self.attempt_started, self.stall_reported = time.monotonic(), False
        try:
            self._conn = self._connect()
        except VirtdeckError:
            return backoff, min(backoff * 2, self._settings.reconnect_max)
        finally:
            self.attempt_started = None
        return self._settings.sync_interval, self._settings.reconnect_min

    def _connect(self) -> HostConnection:
        # An Invalid URI is shown as the host's error.
        return host_service.open_connection(self.uri, self._settings, on_close=self._on_close)

    def _apply_events(self) -> None:
        """Re-read each guest that had an event and store it (gone if it no longer exists)."""
        with self._events_lock:
            events, self._events = self._events, {}
        for uuid, since in events.items():
            try:
                info = self._conn.guest(uuid)
            except HostUnreachable:
                raise
            except NotFound:
                info = None
            with transaction(self._sessions) as session:
                apply_event(session, self.host_id, uuid, info)
            self.stats.event_handled(time.monotonic() - since)

    def _sync_once(self) -> None:
        if self._lost is not None:
            reason, self._lost = self._lost, None
            self._drop_connection()
            self._record_unreachable(reason)
        if self._conn is None:
            self._conn = self._connect()
        if not self._watching:
            self._conn.watch(self._on_event)
            self._watching = True
            facts = self._conn.facts()
            with transaction(self._sessions) as session:
                host_service.record_facts(session, self.host_id, facts)
        started = time.perf_counter()
        with self._events_lock:  # the full read covers every event so far
            self._events.clear()
        guests = self._conn.guests()
        with transaction(self._sessions) as session:
            apply_sync(
                session,
                self.host_id,
                guests,
                sync_ms=(time.perf_counter() - started) * 1000,
            )
        self._record_overcommit(guests)
        self._sync_snapshots(guests)
        self._syncs += 1
        self.stats.synced(time.perf_counter() - started)
        with self._synced:
            self.generation += 1
            self._synced.notify_all()
        if not self._cpu_probed:  # once a connection; QEMU takes seconds, so events do not wait
            self._cpu_probed = True
            threading.Thread(
                target=self._probe_cpu,
                args=(self._conn,),
                name=f"cpu-probe-{self.host_id}",
                daemon=True,
            ).start()

    def _probe_cpu(self, conn: HostConnection) -> None:
        """Find and store which CPU QEMU starts new guests with (app.virt.cpu)."""
        try:
            with self._sessions() as session:
                known = from_record(host_service.get_host(session, self.host_id).cpu_probe)
            probe = cpu_probe(conn, build.host_platform(conn), known=known)
            with transaction(self._sessions) as session:
                host_service.record_cpu_probe(session, self.host_id, probe.as_record())
        except VirtdeckError as exc:  # gone or unreachable: the next connection probes again
            log.warning("CPU probe of host %s: %s", self.host_id, exc.message)
        except Exception:
            log.exception("CPU probe of host %s failed", self.host_id)

    def _stale_snapshots(self, guests: list[GuestInfo]) -> list[str]:
        """The guests whose snapshots to read now: changed ones, or all every Nth sync."""
        marks = {g.spec.uuid: (g.state, g.xml) for g in guests}
        full = self._syncs % SNAPSHOT_EVERY == 0
        stale = [u for u, mark in marks.items() if full or self._snapshot_marks.get(u) != mark]
        self._snapshot_marks = marks
        return stale

    def _sync_snapshots(self, guests: list[GuestInfo]) -> None:
        """Read the snapshots of the stale guests and store what changed."""
        read = {}
        for uuid in self._stale_snapshots(guests):
            try:
                read[uuid] = snapshots_virt.list_snapshots(self._conn, uuid)
            except HostUnreachable:
                raise
            except VirtdeckError as exc:  # vanished meanwhile, or no snapshot support
                log.debug("snapshots of %s on host %s: %s", uuid, self.host_id, exc.message)
        if read:
            with transaction(self._sessions) as session:
                record_host_snapshots(session, self.host_id, read)

    def _record_overcommit(self, guests: list[GuestInfo]) -> None:
        """Read the host's memory, KSM and balloon figures and store them (and a sample)."""
        try:
            stats = overcommit_virt.read_stats(self._conn, guests)
        except HostUnreachable:
            raise
        except VirtdeckError as exc:  # a figure that failed must not mark the host unreachable
            log.warning("overcommit figures of host %s: %s", self.host_id, exc.message)
            return
        with transaction(self._sessions) as session:
            overcommit_service.record_stats(session, self.host_id, stats)

    def check_stalled(self, timeout: float) -> None:
        """Mark the host unreachable once if the current attempt has waited too long on it."""
        started = self.attempt_started
        if started is None or self.stall_reported or time.monotonic() - started < timeout:
            return
        if not self.leader.is_set():  # another instance reports this host
            return
        self.stall_reported = True
        with transaction(self._sessions) as session:
            host_service.record_unreachable(
                session, self.host_id, f"no answer from the host for {timeout:g} s"
            )

    def _record_unreachable(self, error: str) -> None:
        with transaction(self._sessions) as session:
            host_service.record_unreachable(session, self.host_id, error)
        with self._synced:  # an attempt that failed still answers those waiting for it
            self.generation += 1
            self._synced.notify_all()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._watching = False
        self._cpu_probed = False


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
