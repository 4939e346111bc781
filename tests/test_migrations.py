"""The Alembic migrations and the SQLAlchemy models describe the same schema, and a migration
that fills a new column from old rows fills it as it says."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, insert, inspect, select, text
from sqlalchemy.engine import make_url

from app.db import make_engine, make_session_factory
from app.migrate import alembic_config, upgrade
from app.models import Base, Guest
from tests.databases import throwaway_postgresql


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": True}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_database_is_at_the_newest_revision(database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = make_engine(database_url)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert current == head
    assert {"hosts", "guests", "alembic_version"} <= tables


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own, of the same kind as the test database."""
    if make_url(database_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
        upgrade(url)
        yield url
    else:
        with throwaway_postgresql() as url:
            yield url


def test_0022_counts_a_guest_up_from_its_last_change_and_indexes_the_guests_page(
    fresh_url: str,
) -> None:
    command.downgrade(alembic_config(fresh_url), "0021")
    changed = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    engine = make_engine(fresh_url)
    tables = MetaData()
    tables.reflect(engine, only=["hosts", "guests"])
    hosts, guests = tables.tables["hosts"], tables.tables["guests"]
    with engine.begin() as conn:
        conn.execute(
            insert(hosts).values(id=1, name="alpha", uri="test:///default",
                                 created_at=changed, connection="connected")
        )  # fmt: skip
        conn.execute(
            insert(guests),
            [{"host_id": 1, "uuid": f"a1000000-0000-4000-8000-00000000000{i}", "name": name,
              "state": state, "vcpus": 1, "memory_max_kib": 1024, "memory_current_kib": 1024,
              "autostart": False, "persistent": True, "disks": [], "nics": [],
              "domain_xml": "<domain/>", "first_seen_at": changed, "changed_at": changed,
              "last_seen_at": changed}
             for i, (name, state) in enumerate((("up", "paused"), ("off", "shutoff")))],
        )  # fmt: skip
    engine.dispose()

    upgrade(fresh_url)

    engine = make_engine(fresh_url)
    with make_session_factory(engine)() as session:
        since = dict(session.execute(select(Guest.name, Guest.running_since)).all())
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
        else:
            names = conn.execute(text("SELECT indexname FROM pg_indexes"))
        indexes = set(names.scalars())
    engine.dispose()
    assert since == {"up": changed, "off": None}
    assert {"ix_guests_present_cpu", "ix_guests_present_uptime"} <= indexes
