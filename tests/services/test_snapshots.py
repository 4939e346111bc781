"""Storing snapshots: an unchanged read writes nothing; changes and removals are written."""

from datetime import UTC, datetime

from sqlalchemy import select

from app.db import transaction
from app.models import Guest
from app.services.inventory import record_snapshots
from app.services.snapshots import snapshot_tree
from app.virt.snapshots import SnapshotInfo, parse_snapshot, snapshot_xml
from tests.inventory import guests_from, new_host, sync

AT = datetime(2026, 11, 26, tzinfo=UTC)


def info(name: str, parent: str | None = None, *, current: bool = False) -> SnapshotInfo:
    """A shut-off internal snapshot."""
    return SnapshotInfo(name, parent, AT, "shutoff", "", current, False, False)


def store(sessions, guest_id: int, infos: list[SnapshotInfo]) -> int:
    with transaction(sessions) as session:
        return record_snapshots(session, guest_id, infos)


def test_only_changes_are_written(sessions) -> None:
    host_id = new_host(sessions)
    sync(sessions, host_id, guests_from("node-alpha.xml"))
    with sessions() as session:
        guest_id = session.scalar(select(Guest.id).where(Guest.name == "web-1"))
    first = [info("a"), info("b", "a", current=True)]

    written = store(sessions, guest_id, first)
    again = store(sessions, guest_id, first)
    changed = store(sessions, guest_id, [info("a", current=True)])
    with sessions() as session:
        left = [(n.snapshot.name, n.depth, n.snapshot.is_current)
                for n in snapshot_tree(session, guest_id)]  # fmt: skip

    assert (written, again, changed) == (2, 0, 2)  # b removed, a now current
    assert left == [("a", 0, True)]


def test_snapshot_xml_asks_for_an_internal_snapshot() -> None:
    xml = snapshot_xml("n", "a <b> & c", memory=False)
    described = xml.replace("</domainsnapshot>", "<state>shutoff</state></domainsnapshot>")
    parsed = parse_snapshot(described, is_current=True)

    assert '<memory snapshot="no" />' in xml
    assert (parsed.name, parsed.description, parsed.memory, parsed.external) == (
        "n", "a <b> & c", False, False,
    )  # fmt: skip
