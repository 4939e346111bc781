"""Live updates: what a commit changed, told to every open page of every virtdeck instance.

Every session of the app's session factory notes the rows it flushes (guests, hosts, jobs,
backups, audit entries) as topics such as `guest-<uuid>`, `host-<id>`, `hosts`, `job-<id>`,
`backups-<guest uuid>`, `activity`, `activity-<guest uuid>` and `user-<id>` (a user's role,
password or disabled flag changed, or the user was deleted); after the commit the topics are
published. On PostgreSQL they go out with NOTIFY and every instance's listener hands them to its
own subscribers, so a change made through instance A reaches browsers connected to instance B.
SQLite has no NOTIFY: topics are written to the live_outbox table, which every web process reads
every OUTBOX_POLL seconds, so that what a worker process commits reaches the web process's
streams too. Pages subscribe through /events (SSE).
"""

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, event, func, insert, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.models import AuditEntry, Backup, Guest, Host, Job, LiveOutbox, User
from app.models.audit import target_id
from app.models.base import utcnow

log = logging.getLogger(__name__)
CHANNEL = "virtdeck_live"
# NOTIFY payloads must stay under 8000 bytes.
PAYLOAD_LIMIT = 7000
# Topics for the streams themselves, never sent on to browsers: `user-<id>`.
USER_TOPIC = "user-"
TOPICS_KEY = "live_topics"
# What a topic may hold. Each is written into an SSE frame as its event name and data: a line
# break (or a space, which splits NOTIFY payloads) would let it forge frames of its own.
TOPIC = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# A host row changes at every sync (times, stats); only changes to its other columns are news.
QUIET_HOST_COLUMNS = frozenset(
    {
        "last_contact_at",
        "last_sync_at",
        "last_sync_ms",
        "last_reconcile_at",
        "stats",
        "stats_at",
        "sync_requested",
        "sync_answered",
    }
)
# SQLite: how often a web process reads the outbox, and how long rows stay there.
OUTBOX_POLL = 0.1
OUTBOX_KEEP = timedelta(seconds=60)
OUTBOX_PRUNE_EVERY = 200


def note(session: Session, *topics: str) -> None:
    """Publish these topics after the session commits (for bulk statements the flush misses)."""
    session.info.setdefault(TOPICS_KEY, set()).update(topics)


def _news(row: Any) -> bool:
    """Whether a flushed row changed anything a page shows."""
    if not isinstance(row, Host):
        return True
    state = inspect(row)
    if state.pending or state.deleted or state.was_deleted:
        return True
    return any(
        attr.history.has_changes() for attr in state.attrs if attr.key not in QUIET_HOST_COLUMNS
    )


def topics_of(row: Any) -> set[str]:
    """The topics a changed row touches."""
    if isinstance(row, Guest):
        return {"guests", f"guest-{row.uuid}", f"host-{row.host_id}"}
    if isinstance(row, Host):
        return {"hosts", f"host-{row.id}"}
    if isinstance(row, Job):
        return {"jobs", f"job-{row.id}"}
    if isinstance(row, Backup):
        return {"backups", f"backups-{row.guest_uuid}"}
    if isinstance(row, User):
        return {f"{USER_TOPIC}{row.id}"}
    if isinstance(row, AuditEntry):
        guest = target_id(row.target, "guest")
        return {"activity", f"activity-{guest}"} if guest else {"activity"}
    return set()


class Subscriber:
    """One open event stream: topics arrive on its asyncio loop, merged while it is busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: set[str] = set()
        self._ready = asyncio.Event()
        self.closed = False

    def push(self, topics: frozenset[str]) -> None:
        """From any thread: hand over topics."""
        try:
            self._loop.call_soon_threadsafe(self._add, topics)
        except RuntimeError:  # its loop has closed
            self.closed = True

    def close(self) -> None:
        """From any thread: end the stream."""
        self.closed = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def _add(self, topics: frozenset[str]) -> None:
        self._pending |= topics
        self._ready.set()

    async def next(self, timeout: float) -> set[str]:
        """The topics since the last call (empty after timeout, or once closed)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return set()
        self._ready.clear()
        topics, self._pending = self._pending, set()
        return topics


class LiveBus:
    """Publishes committed changes to subscribers, across instances on PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._notify = engine.dialect.name == "postgresql"
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self.listening = threading.Event()
        self._written = 0

    # --- collecting topics from sessions ---

    def attach(self, sessions: sessionmaker[Session]) -> None:
        """Note the topics of every flush of this factory's sessions; publish after commit."""

        @event.listens_for(sessions, "after_flush")
        def _collect(session: Session, _context: Any) -> None:
            topics = session.info.setdefault(TOPICS_KEY, set())
            for row in (*session.new, *session.deleted):
                topics |= topics_of(row)
            for row in session.dirty:
                if _news(row):
                    topics |= topics_of(row)

        @event.listens_for(sessions, "after_commit")
        def _publish(session: Session) -> None:
            topics = session.info.pop(TOPICS_KEY, None)
            if topics:
                self.publish(topics)

        @event.listens_for(sessions, "after_rollback")
        def _forget(session: Session) -> None:
            session.info.pop(TOPICS_KEY, None)

    # --- publishing and delivering ---

    def publish(self, topics: Iterable[str]) -> None:
        """Tell every instance's subscribers (never raises: a lost update is not an error)."""
        topics = _well_formed(topics)
        if not topics:
            return
        if not self._notify:
            self._write_outbox(topics)
            return
        try:
            with self._engine.begin() as connection:
                for payload in _payloads(topics):
                    connection.execute(
                        text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": payload},
                    )
        except Exception:
            log.exception("could not publish live topics")

    def _write_outbox(self, topics: frozenset[str]) -> None:
        """SQLite: leave the topics for every web process's reader (and prune old rows)."""
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(LiveOutbox).values(topics=" ".join(sorted(topics)), created_at=utcnow())
                )
                self._written += 1
                if self._written % OUTBOX_PRUNE_EVERY == 0:  # never the newest: ids go on rising
                    newest = select(func.max(LiveOutbox.id)).scalar_subquery()
                    connection.execute(
                        delete(LiveOutbox).where(
                            LiveOutbox.created_at < utcnow() - OUTBOX_KEEP, LiveOutbox.id < newest
                        )
                    )
        except Exception:
            log.exception("could not publish live topics")

    def _deliver(self, topics: frozenset[str]) -> None:
        topics = _well_formed(topics)
        if not topics:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.push(topics)

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscriber:
        """A new stream's subscriber."""
        subscriber = Subscriber(loop)
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """The stream ended."""
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> int:
        """How many streams are open in this process."""
        with self._lock:
            return len(self._subscribers)

    # --- the PostgreSQL listener ---

    def start(self) -> None:
        """Start listening for every process's topics: NOTIFY on PostgreSQL, the outbox on
        SQLite."""
        target = self._listen if self._notify else self._read_outbox
        self._listener = threading.Thread(target=target, name="live-listen", daemon=True)
        self._listener.start()

    def _read_outbox(self) -> None:
        last = None
        while not self._stopping.is_set():
            try:
                with self._engine.connect() as connection:
                    if last is None:
                        last = connection.scalar(select(func.max(LiveOutbox.id))) or 0
                        self.listening.set()
                    rows = connection.execute(
                        select(LiveOutbox.id, LiveOutbox.topics)
                        .where(LiveOutbox.id > last)
                        .order_by(LiveOutbox.id)
                    ).all()
                for row_id, topics in rows:
                    last = row_id
                    self._deliver(frozenset(topics.split()))
            except Exception as exc:
                log.warning("live outbox read failed (%s); retrying", exc)
            self._stopping.wait(OUTBOX_POLL)

    def _listen(self) -> None:
        # Imported only here: a process on SQLite never needs psycopg (about 9 MiB of memory).
        import psycopg

        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.5
                    while not self._stopping.is_set():
                        for note in connection.notifies(timeout=0.1):
                            self._deliver(frozenset(note.payload.split()))
            except Exception as exc:
                self.listening.clear()
                log.warning("live listener lost the database (%s); retrying", exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10)

    def stop(self) -> None:
        """Stop listening and end every stream (browsers reconnect to another instance)."""
        self._stopping.set()
        with self._lock:
            subscribers, self._subscribers = list(self._subscribers), set()
        for subscriber in subscribers:
            subscriber.close()
        if self._listener is not None:
            self._listener.join(timeout=2)


def _well_formed(topics: Iterable[str]) -> frozenset[str]:
    """The topics of TOPIC's shape; the others are dropped (and logged, escaped)."""
    topics = frozenset(topics)
    kept = frozenset(topic for topic in topics if TOPIC.fullmatch(topic))
    if kept != topics:
        log.warning("dropped malformed live topics: %s", sorted(map(ascii, topics - kept)))
    return kept


def _payloads(topics: frozenset[str]) -> list[str]:
    """Space-separated topics, split to fit NOTIFY's payload limit."""
    payloads, current = [], ""
    for topic in sorted(topics):
        if current and len(current) + len(topic) + 1 > PAYLOAD_LIMIT:
            payloads.append(current)
            current = ""
        current = f"{current} {topic}" if current else topic
    payloads.append(current)
    return payloads
