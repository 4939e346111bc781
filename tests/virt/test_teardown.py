"""Deleting a guest on the test driver: which disks go, which stay and why, and the undefine."""

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import Conflict, NotFound
from app.virt import teardown
from app.virt.connection import HostConnection
from tests.nodes import LONE, OWNER, POOL, VOLUMES, storage_node


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[HostConnection]:
    """A private test-driver host built from storage_node."""
    connection = HostConnection(storage_node(tmp_path), keepalive=(3, 3), on_close=lambda _r: None)
    yield connection
    connection.close()


def volumes(conn: HostConnection) -> set[str]:
    """Every volume name in the pool."""
    pool = conn.lv.storagePoolLookupByName("vdtest-images")
    return {v.name() for v in pool.listAllVolumes(0)}


def guest_names(conn: HostConnection) -> set[str]:
    """Every guest on the host."""
    return {g.spec.name for g in conn.guests()}


EXPECTED_KEPT = {
    "/srv/iso/install.iso": "cdrom media are never removed",
    "/srv/elsewhere/loose.img": teardown.NOT_A_VOLUME,
    f"{POOL}/shared.qcow2": "also used by guest sharer",
    f"{POOL}/golden.qcow2": f"backing image of {POOL}/clone.qcow2",
    f"{POOL}/base.qcow2": (f"backing image of {POOL}/own.qcow2; backing images are never removed"),
}


def test_the_plan_removes_only_volumes_that_nothing_else_uses(conn: HostConnection) -> None:
    plan = teardown.plan_storage(conn, OWNER)

    assert plan.remove == (f"{POOL}/own.qcow2",)
    assert {k.path: k.reason for k in plan.keep} == EXPECTED_KEPT


def test_a_running_guest_is_refused_without_force_and_left_alone(conn: HostConnection) -> None:
    with pytest.raises(Conflict) as refused:
        teardown.delete_guest(conn, OWNER, remove_storage=True, force=False)

    assert refused.value.extra == {"state": "running"}
    assert "it is running" in refused.value.message
    assert "owner" in guest_names(conn)
    assert "own.qcow2" in volumes(conn)


def test_force_deletes_a_running_guest_with_its_snapshots_and_own_volume(
    conn: HostConnection,
) -> None:
    snapshot = "<domainsnapshot><name>before</name></domainsnapshot>"
    conn.domain(OWNER).snapshotCreateXML(snapshot, 0)

    deletion = teardown.delete_guest(conn, OWNER, remove_storage=True, force=True)

    assert (deletion.name, deletion.removed) == ("owner", (f"{POOL}/own.qcow2",))
    assert {k.path: k.reason for k in deletion.kept} == EXPECTED_KEPT
    assert guest_names(conn) == {"sharer", "lone"}
    assert volumes(conn) == set(VOLUMES) - {"own.qcow2"}


def test_without_remove_storage_every_disk_is_kept_and_listed(conn: HostConnection) -> None:
    deletion = teardown.delete_guest(conn, LONE, remove_storage=False, force=False)

    assert deletion.removed == ()
    assert deletion.kept == (teardown.KeptDisk(f"{POOL}/lone.qcow2", teardown.NOT_REQUESTED),)
    assert "lone.qcow2" in volumes(conn)
    assert "lone" not in guest_names(conn)


def test_a_transient_guest_is_gone_once_forced_off(conn: HostConnection) -> None:
    root = ET.fromstring(conn.domain(LONE).XMLDesc(0))
    root.find("name").text = "transient"
    root.remove(root.find("uuid"))
    transient = conn.lv.createXML(ET.tostring(root, encoding="unicode"), 0)

    deletion = teardown.delete_guest(conn, transient.UUIDString(), remove_storage=False, force=True)

    assert deletion.name == "transient"
    assert guest_names(conn) == {"owner", "sharer", "lone"}


def test_an_unknown_guest_is_not_found(conn: HostConnection) -> None:
    with pytest.raises(NotFound):
        teardown.delete_guest(
            conn, "00000000-0000-4000-8000-00000000dead", remove_storage=False, force=True
        )
