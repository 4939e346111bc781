"""The inventory sync writes only what changed and never leaves a vanished guest looking alive."""

from sqlalchemy import event, select

from app.models import Guest, Host
from app.virt.types import GuestInfo
from tests.inventory import guests_from, new_host, sync


def count_writes(engine) -> list[str]:
    """Record every INSERT/UPDATE/DELETE on the guests table."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn, _cursor, statement, *_args) -> None:
        verb = statement.lstrip().split(" ", 1)[0].upper()
        if verb in {"INSERT", "UPDATE", "DELETE"} and "guests" in statement.split("(")[0]:
            seen.append(verb)

    return seen


def test_unchanged_resync_writes_no_guest_rows(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    first = sync(sessions, host_id, guests)
    writes = count_writes(sessions.kw["bind"])

    again = sync(sessions, host_id, guests)

    assert (first.inserted, first.updated, first.gone) == (3, 0, 0)
    assert again.rows_written == 0
    assert writes == []


def test_a_changed_guest_is_rewritten_alone(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    stopped = GuestInfo(guests[0].spec, "shutoff", False, True, guests[0].xml)

    result = sync(sessions, host_id, [stopped, *guests[1:]])

    assert (result.inserted, result.updated, result.gone) == (0, 1, 0)
    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.state == "shutoff"


def test_a_vanished_guest_is_marked_gone_and_returns_when_seen_again(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)

    vanished = sync(sessions, host_id, guests[1:])
    again = sync(sessions, host_id, guests[1:])
    back = sync(sessions, host_id, guests)

    assert vanished.gone == 1 and again.rows_written == 0
    assert back.updated == 1
    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.gone_at is None


def test_a_gone_guest_keeps_the_time_it_was_last_seen(sessions) -> None:
    host_id = new_host(sessions)
    guests = guests_from("node-alpha.xml")
    sync(sessions, host_id, guests)
    with sessions() as session:
        synced_at = session.get(Host, host_id).last_sync_at

    sync(sessions, host_id, guests[1:])

    with sessions() as session:
        row = session.scalars(select(Guest).where(Guest.name == "web-1")).one()
        assert row.gone_at is not None and row.gone_at > synced_at
        assert row.last_seen_at == synced_at
