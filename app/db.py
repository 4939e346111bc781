"""Engine and session factory for SQLite or PostgreSQL."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# SQLite takes one writer at a time, and a writer that finds the database locked sleeps in
# growing steps (up to 100 ms) before it tries again: the threads of one process take turns
# through this lock instead, each starting the moment the one before commits.
_SQLITE_WRITERS: "WeakKeyDictionary[Engine, threading.RLock]" = WeakKeyDictionary()


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL, foreign keys and a busy timeout."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    _SQLITE_WRITERS[engine] = threading.RLock()

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error (on SQLite, one
    such transaction of this process at a time)."""
    writers = _SQLITE_WRITERS.get(factory.kw.get("bind"))
    with writers or nullcontext(), factory() as session, session.begin():
        yield session


def insert_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows (each naming the same columns) into table in the session's transaction. On
    PostgreSQL this is one COPY: the executemany INSERT took twice the CPU of the process that
    sent it, and a worker storing 25,000 new guests spent 2 s of its interpreter's time in it.
    Values go through the columns' own types first, as an INSERT's would."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    names = list(rows[0])
    unnamed = [c.name for c in table.columns if c.default is not None and c.name not in names]
    if unnamed:  # a COPY leaves Python-side defaults out; an INSERT would not
        raise ValueError(f"insert_many into {table.name}: no value for {', '.join(unnamed)}")
    types = [table.c[name].type.dialect_impl(dialect) for name in names]
    processors = [column_type.bind_processor(dialect) for column_type in types]
    columns = ", ".join(f'"{name}"' for name in names)  # the table's own column names
    driver = session.connection().connection.driver_connection
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(
                [row[n] if p is None else p(row[n]) for n, p in zip(names, processors, strict=True)]
            )
