"""After a bulk load, PostgreSQL's figures of the guests table are brought up to date once."""

import dataclasses

from sqlalchemy import text

from app.db import make_engine, make_session_factory
from app.services.planner import refresh_if_grown
from app.virt.types import GuestInfo
from tests.databases import throwaway_postgresql
from tests.inventory import guests_from, new_host, sync
from tests.polling import until


def many_guests(count: int, start: int = 0) -> list[GuestInfo]:
    """`count` distinct guests made from one of node-alpha.xml's."""
    model = guests_from("node-alpha.xml")[0]
    return [
        dataclasses.replace(
            model,
            spec=dataclasses.replace(model.spec, uuid=f"00000000-0000-0000-0000-{n:012d}"),
        )
        for n in range(start, start + count)
    ]


def measured(engine) -> tuple[float, object]:
    """What PostgreSQL last measured of the guests table: rows, and when it was analyzed."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT c.reltuples, s.last_analyze FROM pg_class c "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'guests'"
            )
        ).one()


def test_a_grown_guests_table_is_vacuumed_and_analyzed_once() -> None:
    with throwaway_postgresql() as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        host_id = new_host(sessions)
        try:
            sync(sessions, host_id, many_guests(600))
            # The server counts the inserted rows within a second of the commit.
            until(lambda: refresh_if_grown(engine), timeout=5, what="the table was not measured")
            rows, analyzed = measured(engine)
            again = refresh_if_grown(engine)

            sync(sessions, host_id, many_guests(400, start=600))  # 1,000 < 1.5 x 600 + 500
            still = refresh_if_grown(engine)

            assert rows == 600 and analyzed is not None
            assert again is False and still is False
        finally:
            engine.dispose()


def test_sqlite_needs_no_measuring(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        assert refresh_if_grown(engine) is False
    finally:
        engine.dispose()
