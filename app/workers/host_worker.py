"""One host's worker thread: keeps its libvirt connection, follows its events, syncs its
inventory, overcommit figures and snapshots into the database, and reconnects with backoff.

Three ways a guest is read: a libvirt event re-reads the guest it names at once; a pass every
sync_interval lists all guests' states in a few calls and reads the XML only of those new or
changed since; a reconcile (on connecting, on request, every reconcile_interval) reads all.

(Near 500 lines: connecting, events, syncs and the CPU probe share the thread's state.)
"""

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import HostUnreachable, NotFound, VirtdeckError
from app.models.base import utcnow
from app.models.host import Host
from app.services import addresses as address_service
from app.services import hosts as host_service
from app.services import overcommit as overcommit_service
from app.services import usage as usage_service
from app.services.inventory import apply_event, apply_sync, record_host_snapshots
from app.virt import addresses as addresses_virt
from app.virt import build
from app.virt import overcommit as overcommit_virt
from app.virt import snapshots as snapshots_virt
from app.virt import usage as usage_virt
from app.virt.connection import Balloons, HostConnection
from app.virt.cpu import CpuProbe, from_record
from app.virt.cpu import current as current_cpu
from app.virt.cpu import probe as cpu_probe
from app.virt.types import DomainState, GuestInfo
from app.workers.memory import release_free_memory
from app.workers.reconciles import RECONCILES

log = logging.getLogger(__name__)
# While other hosts load their guests (app.workers.reconciles), a loaded host's figures and
# snapshots wait up to GUESTS_FIRST_WAIT seconds, and a due pass up to PASS_DEFERRAL sync
# intervals; both look again every PASS_RETRY seconds, and events are handled meanwhile.
GUESTS_FIRST_WAIT = 5.0
PASS_DEFERRAL = 3
PASS_RETRY = 0.25
# An unchanged overcommit reading is stored again after this many seconds (a sample a minute).
STATS_REWRITE = 60.0


@dataclass
class WorkerStats:
    """What /metrics tells about a host's worker: its syncs (passes and reconciles alike),
    events, how many guests each way re-read, and when it last read them all. Plain figures,
    so that they travel as JSON (as_dict)."""

    syncs: int = 0
    sync_seconds_total: float = 0.0
    last_sync_seconds: float = 0.0
    events_received: int = 0
    refreshed_by_event: int = 0
    event_lag_seconds_total: float = 0.0
    last_event_lag_seconds: float = 0.0
    refreshed_by_pass: int = 0
    refreshed_by_reconcile: int = 0
    reconciles: int = 0
    last_reconcile_at: float | None = None  # UNIX time

    def synced(self, seconds: float) -> None:
        """A pass or a reconcile took this long."""
        self.syncs += 1
        self.sync_seconds_total += seconds
        self.last_sync_seconds = seconds

    def event_handled(self, lag: float) -> None:
        """A guest an event named was in the database this long after libvirt told us."""
        self.refreshed_by_event += 1
        self.event_lag_seconds_total += lag
        self.last_event_lag_seconds = lag

    def reconciled(self, guests: int) -> None:
        """A reconcile read these many guests."""
        self.reconciles += 1
        self.refreshed_by_reconcile += guests
        self.last_reconcile_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        """The figures by name."""
        return asdict(self)


class Mark(NamedTuple):
    """What the worker last stored of a guest: enough to tell a change without keeping its
    XML (a digest of it), and whether it has a balloon device (for the overcommit figures)."""

    state: DomainState
    digest: bytes
    has_balloon: bool

    @classmethod
    def of(cls, info: GuestInfo) -> "Mark":
        state = DomainState(info.spec.uuid, info.state, info.autostart, info.persistent)
        digest = hashlib.blake2b(info.xml.encode(), digest_size=16).digest()
        return cls(state, digest, info.spec.has_balloon)


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
        # Each guest as last stored, and as it was when its snapshots were last read.
        self._marks: dict[str, Mark] = {}
        self._snapshot_marks: dict[str, Mark] = {}
        # Guests with an unhandled libvirt event, and when (monotonic) the first one came.
        self._events: dict[str, float] = {}
        self._events_lock = threading.Lock()
        self._sync_due = False
        # A full read of the host is under way: a sync asked now needs the one after it.
        self._reading = False
        self._watching = False
        self._cpu_probed = False
        # Set while this instance holds the host's lease: only then does it sync and write.
        self.leader = threading.Event()
        self.stats = WorkerStats()
        # How long a due pass may wait for other hosts' full reads (see run).
        self._pass_deferral = settings.sync_interval * PASS_DEFERRAL
        # The overcommit reading last stored, and when (monotonic).
        self._stats_written: tuple[overcommit_virt.HostStats | None, float] = (None, 0.0)
        # The last reading of the running guests' counters, when the next is due, and the hour
        # of the last one stored (a new hour rolls the readings up).
        self._usage: dict[str, usage_virt.Counters] = {}
        self._usage_due = 0.0
        self._usage_hour: datetime | None = None

    def request_sync(self) -> int:
        """Ask for a sync now; returns the generation that will include it."""
        with self._synced:
            target = self.generation + (2 if self._reading else 1)
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
            self.stats.events_received += 1
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
        due = 0.0  # when (monotonic) the next pass is due
        reconcile_due = 0.0  # and the next reconcile
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
            now = time.monotonic()
            with self._synced:
                full = self._sync_due or now >= reconcile_due or self._conn is None
                self._sync_due = False
            self.attempt_started, self.stall_reported = now, False
            postponed = False
            try:
                if full or self._lost is not None:
                    self._reconcile()
                    reconcile_due = time.monotonic() + self._settings.reconcile_interval
                    due = time.monotonic() + self._settings.sync_interval
                elif now >= due and RECONCILES.busy() and now - due < self._pass_deferral:
                    # Other hosts are loading their guests (a worker's start, many hosts
                    # added): the pass waits, events do not.
                    self._apply_events()
                    postponed = True
                elif now >= due:
                    self._apply_events()
                    self._pass()
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
                reconcile_due = due  # reconnecting reads every guest again
            except Exception:
                if self._removed():  # removed while a write was on its way: nothing to report
                    log.info("host %s was removed during its sync", self.host_id)
                else:
                    log.exception("sync of host %s failed", self.host_id)
                due = time.monotonic() + self._settings.sync_interval
                if full:  # tried again at the next pass, not at once
                    reconcile_due = due
            self.attempt_started = None
            if self._events and self._conn is not None and not self._wake.is_set():
                continue
            until = time.monotonic() + PASS_RETRY if postponed else min(due, reconcile_due)
            self._wake.wait(max(0.0, until - time.monotonic()))
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
            if info is None:
                self._marks.pop(uuid, None)
            else:
                self._marks[uuid] = Mark.of(info)
            self.stats.event_handled(time.monotonic() - since)

    def _pass(self) -> None:
        """List every guest's state in a few calls; read and store the XML only of those new
        or whose state, autostart or persistence changed; mark the vanished ones gone."""
        started = time.perf_counter()
        states, balloons = self._conn.scan()
        present = {s.uuid for s in states}
        changed = [s for s in states if (m := self._marks.get(s.uuid)) is None or m.state != s]
        guests = self._conn.read_guests(changed)
        gone = [uuid for uuid in self._marks if uuid not in present]
        self._store(guests, started, gone=gone)
        for uuid in gone:
            del self._marks[uuid]
        self._marks.update((g.spec.uuid, Mark.of(g)) for g in guests)
        self.stats.refreshed_by_pass += len(guests)
        self._record_overcommit(balloons)
        self._record_usage()
        self._sync_snapshots(every=False)
        self.stats.synced(time.perf_counter() - started)

    def _store(self, guests: list[GuestInfo], started: float, **how: Any) -> None:
        """apply_sync (with `how`) of what a pass or reconcile begun at `started` read."""
        with transaction(self._sessions) as session:
            apply_sync(
                session, self.host_id, guests, sync_ms=(time.perf_counter() - started) * 1000, **how
            )

    def _reconcile(self) -> None:
        """Connect if needed, then read and store every guest with its XML and snapshots."""
        began = time.perf_counter()
        try:
            guests, balloons, loading, started, read, stored = self._read_all()
            self._marks = {g.spec.uuid: Mark.of(g) for g in guests}
            count = len(guests)
            del guests  # their XML (about 2 MiB for 500) goes before the wait for others
            if loading:
                self._let_others_load()
            figures = time.perf_counter()
            self._record_overcommit(balloons)
            self._sync_snapshots(every=True)
            self.stats.reconciled(count)
            self.stats.synced(time.perf_counter() - started)
            log.info(
                "host %s reconciled: connected in %.2f s, %d guests read in %.2f s, stored in "
                "%.2f s, waited for other hosts %.2f s, figures and snapshots in %.2f s",
                self.host_id, started - began, count, read - started, stored - read,
                figures - stored, time.perf_counter() - figures,
            )  # fmt: skip
            with self._synced:
                self.generation += 1
                self._synced.notify_all()
        finally:
            with self._synced:
                self._reading = False
        release_free_memory()  # what the read's XML took is free now
        if not self._cpu_probed:  # once a connection
            self._cpu_probed = True
            self._probe_cpu()

    def _let_others_load(self) -> None:
        """Wait (up to GUESTS_FIRST_WAIT) while other hosts load their guests (see
        app.workers.reconciles), handling this host's events meanwhile."""
        self.attempt_started = None  # waiting for other hosts is no stall of this one
        deadline = time.monotonic() + GUESTS_FIRST_WAIT
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if RECONCILES.settled(PASS_RETRY):
                break
            self._apply_events()
        self.attempt_started = time.monotonic()

    def _read_all(self) -> tuple[list[GuestInfo], Balloons | None, bool, float, float, float]:
        """Connect if needed, then read and store every guest; returns them, the balloon figures
        the same scan read, whether this was the connection's first read, and when (perf
        counter) the read began, ended and the store ended."""
        if self._lost is not None:
            reason, self._lost = self._lost, None
            self._drop_connection()
            self._record_unreachable(reason)
        if self._conn is None:
            self._conn = self._connect()
        loading = not self._watching
        if loading:
            self._conn.watch(self._on_event)
            self._watching = True
            facts = self._conn.facts()
            with transaction(self._sessions) as session:
                host_service.record_facts(session, self.host_id, facts)
        started = time.perf_counter()
        with self._synced:
            self._reading = True
        with self._events_lock:  # the full read covers every event so far
            self._events.clear()
        with RECONCILES.slot(loading=loading):
            guests, balloons = self._conn.read_all()
            read = time.perf_counter()
            self._store(guests, started, reconciled=True)
        return guests, balloons, loading, started, read, time.perf_counter()

    def _probe_cpu(self) -> None:
        """Store which CPU QEMU starts new guests with (app.virt.cpu). When that needs a probe,
        which starts QEMU for seconds, it runs in a thread of its own on a connection of its
        own: events do not wait for it, and closing this worker's connection cannot pull the
        connection from under it (libvirt-python crashes on a closed connection)."""
        try:
            with self._sessions() as session:
                known = from_record(host_service.get_host(session, self.host_id).cpu_probe)
            platform = build.host_platform(self._conn)
            found = current_cpu(self._conn, platform, known=known)
        except HostUnreachable:
            raise
        except VirtdeckError as exc:  # no CPU answer is no reason to drop the host
            log.warning("CPU probe of host %s: %s", self.host_id, exc.message)
            return
        if found is not None:
            self._record_cpu(found)
            return
        threading.Thread(
            target=self._probe_apart,
            args=(platform, known),
            name=f"cpu-probe-{self.host_id}",
            daemon=True,
        ).start()

    def _probe_apart(self, platform: build.Platform, known: CpuProbe | None) -> None:
        try:
            conn = host_service.open_connection(
                self.uri, self._settings, on_close=lambda _reason: None
            )
            try:
                found = cpu_probe(conn, platform, known=known)
            finally:
                conn.close()
            self._record_cpu(found)
        except VirtdeckError as exc:  # gone or unreachable: the next connection probes again
            log.warning("CPU probe of host %s: %s", self.host_id, exc.message)
        except Exception:
            log.exception("CPU probe of host %s failed", self.host_id)

    def _record_cpu(self, found: CpuProbe) -> None:
        with transaction(self._sessions) as session:
            host_service.record_cpu_probe(session, self.host_id, found.as_record())

    def _sync_snapshots(self, *, every: bool) -> None:
        """Read and store the snapshots of every guest, or of those that changed since theirs
        were last read (virtdeck's own snapshot actions store theirs; those made elsewhere
        show at the next reconcile, as libvirt has no snapshot events)."""
        stale = [u for u, m in self._marks.items() if every or self._snapshot_marks.get(u) != m]
        self._snapshot_marks = dict(self._marks)
        if not stale:
            return
        # One call says which guests have snapshots at all; the others have none to read.
        having = snapshots_virt.guests_with_snapshots(self._conn)
        read = {uuid: [] for uuid in stale if uuid not in having}
        for uuid in (u for u in stale if u in having):
            try:
                read[uuid] = snapshots_virt.list_snapshots(self._conn, uuid)
            except HostUnreachable:
                raise
            except VirtdeckError as exc:  # vanished meanwhile, or no snapshot support
                log.debug("snapshots of %s on host %s: %s", uuid, self.host_id, exc.message)
        if read:
            with transaction(self._sessions) as session:
                record_host_snapshots(session, self.host_id, read)

    def _record_overcommit(self, scanned: Balloons | None = None) -> None:
        """Read the host's memory, KSM and balloon figures (the latter unless a pass's scan
        read them: `scanned`) and store them (and a sample)."""
        balloons = {uuid: mark.has_balloon for uuid, mark in self._marks.items()}
        try:
            stats = overcommit_virt.read_stats(self._conn, balloons, scanned)
        except HostUnreachable:
            raise
        except VirtdeckError as exc:  # a figure that failed must not mark the host unreachable
            log.warning("overcommit figures of host %s: %s", self.host_id, exc.message)
            return
        # An unchanged reading is written again only when a sample of the ratios is due.
        now = time.monotonic()
        if stats == self._stats_written[0] and now - self._stats_written[1] < STATS_REWRITE:
            return
        with transaction(self._sessions) as session:
            overcommit_service.record_stats(session, self.host_id, stats)
        self._stats_written = (stats, now)

    def _record_usage(self) -> None:
        """Every usage_interval, read the running guests' counters in one call and store what
        they used since the last reading; and read the addresses of those due a reading."""
        if time.monotonic() < self._usage_due:
            return
        self._usage_due = time.monotonic() + self._settings.usage_interval
        self._read_usage()
        self._read_addresses()

    def _read_usage(self) -> None:
        try:
            counters = usage_virt.read_counters(self._conn)
        except HostUnreachable:
            raise
        except VirtdeckError as exc:  # a figure that failed must not mark the host unreachable
            log.warning("usage figures of host %s: %s", self.host_id, exc.message)
            return
        now = utcnow()
        hour = usage_service.hour_of(now)
        # Nothing to write for a host with no figures, except once an hour (its last running
        # guests' readings rolled up, every expired sample dropped).
        if counters or self._usage or hour != self._usage_hour:
            with transaction(self._sessions) as session:
                usage_service.record_usage(
                    session, self.host_id, self._usage, counters, now=now,
                    roll_up=hour != self._usage_hour,
                )  # fmt: skip
            self._usage_hour = hour
        self._usage = counters

    def _read_addresses(self) -> None:
        """Store the addresses of the guests up and due a reading (a bounded number a pass: one
        libvirt call a source each), and forget those of guests no longer up."""
        now = utcnow()
        with transaction(self._sessions) as session:
            due = address_service.due_for_addresses(session, self.host_id, now=now)
        try:
            found = addresses_virt.read_addresses(self._conn, due) if due else {}
        except HostUnreachable:
            raise
        except VirtdeckError as exc:  # as for the usage figures
            log.warning("addresses of host %s: %s", self.host_id, exc.message)
            return
        with transaction(self._sessions) as session:
            address_service.record_addresses(session, self.host_id, found, now=now)

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

    def _removed(self) -> bool:
        try:
            with self._sessions() as session:
                return session.get(Host, self.host_id) is None
        except Exception:  # the database itself failing: the caller reports the first error
            return False

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
        # Counters read before the loss are no start for a rate after it.
        self._usage, self._usage_due = {}, 0.0
