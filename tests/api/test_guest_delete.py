"""DELETE /api/v1/guests/{uuid} on test-driver hosts: states, storage, permissions, the lock."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import Guest
from app.services.guest_actions import guest_lock
from app.services.hosts import record_unreachable
from app.virt.teardown import NOT_A_VOLUME, NOT_REQUESTED
from tests.conftest import add_host
from tests.nodes import LONE, OWNER, POOL, storage_node

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running, on alpha
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off, on alpha
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


def delete(client: TestClient, uuid: str, **params: bool):
    """DELETE the guest through the API with these query flags."""
    return client.delete(f"/api/v1/guests/{uuid}", params=params)


def test_a_stopped_guest_is_deleted_and_shown_gone_without_waiting_for_a_sync(
    client: TestClient, two_hosts
) -> None:
    response = delete(client, DB_1)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "uuid": DB_1,
        "name": "db-1",
        "removed_volumes": [],
        "kept_volumes": [{"path": "/var/lib/libvirt/images/db-1.qcow2", "reason": NOT_REQUESTED}],
    }
    gone = client.get(f"/api/v1/guests/{DB_1}").json()
    assert (gone["status"], gone["gone_at"] is not None) == ("gone", True)
    alpha_id = two_hosts[0]["id"]
    synced = client.post(f"/api/v1/hosts/{alpha_id}/refresh", params={"wait": 15})
    assert synced.status_code == 200
    listed = client.get("/api/v1/guests", params={"host_id": alpha_id}).json()
    assert [g["name"] for g in listed["items"]] == ["web-1", "web-2"]


def test_the_delete_is_audited_with_the_guest_name(client: TestClient, two_hosts) -> None:
    request_id = delete(client, DB_1).headers["X-Request-ID"]

    entries = client.get("/api/v1/audit", params={"action": "guest.delete"}).json()["items"]
    mine = [(e["target"], e["result"]) for e in entries if e["request_id"] == request_id]
    assert mine == [(f"guest:{DB_1} (db-1)", "ok")]


def test_remove_storage_deletes_only_volumes_no_one_else_uses(make_client, tmp_path: Path) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    add_host(client, "storage", storage_node(tmp_path))

    owned = client.get(f"/api/v1/guests/{OWNER}/disks-owned")
    lone = delete(client, LONE, remove_storage=True)
    owner = delete(client, OWNER, remove_storage=True, force=True)

    assert owned.status_code == 200
    assert owned.json()["removable_volumes"] == [f"{POOL}/own.qcow2"]
    kept = {k["path"]: k["reason"] for k in owned.json()["kept_volumes"]}
    assert kept["/srv/elsewhere/loose.img"] == NOT_A_VOLUME
    assert kept[f"{POOL}/shared.qcow2"] == "also used by guest sharer"
    assert lone.json()["removed_volumes"] == [f"{POOL}/lone.qcow2"]
    assert owner.json()["removed_volumes"] == [f"{POOL}/own.qcow2"]
    assert owner.json()["kept_volumes"] == owned.json()["kept_volumes"]
    present = client.get("/api/v1/guests").json()["items"]
    assert [g["name"] for g in present] == ["sharer"]


def test_a_running_guest_needs_force(client: TestClient, two_hosts) -> None:
    refused = delete(client, WEB_1, remove_storage=True)
    still_there = client.get(f"/api/v1/guests/{WEB_1}").json()
    forced = delete(client, WEB_1, force=True)

    assert refused.status_code == 409
    assert refused.json()["state"] == "running"
    assert refused.json()["detail"].startswith("cannot delete web-1: it is running")
    assert still_there["status"] == "running"
    assert forced.status_code == 200
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["status"] == "gone"


def test_unknown_and_already_deleted_guests_are_404(client: TestClient, two_hosts) -> None:
    first = delete(client, DB_1)
    again = delete(client, DB_1)

    assert first.status_code == 200
    assert again.status_code == 404
    assert again.json()["detail"] == f"guest db-1 ({DB_1}) is gone"
    assert delete(client, UNKNOWN).status_code == 404
    assert client.get(f"/api/v1/guests/{UNKNOWN}/disks-owned").status_code == 404


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_may_delete(make_client, two_hosts, role: str) -> None:
    other = make_client(role=role)

    response = delete(other, DB_1, force=True)

    assert response.status_code == 403
    assert response.json()["detail"] == f"your role ({role}) does not allow this; it needs admin"
    assert other.get(f"/api/v1/guests/{DB_1}").json()["status"] == "shutoff"


def test_a_busy_guest_is_409_naming_the_action_in_progress(
    client: TestClient, two_hosts, sessions
) -> None:
    with sessions() as session:
        guest = session.query(Guest).filter_by(uuid=DB_1).one()
    with guest_lock(sessions, guest, "start"):
        refused = delete(client, DB_1)

    assert refused.status_code == 409
    assert refused.json()["detail"] == "db-1 is busy: start in progress"
    assert client.get(f"/api/v1/guests/{DB_1}").json()["status"] == "shutoff"


def test_a_guest_on_an_unreachable_host_is_503_and_stays(
    client: TestClient, two_hosts, sessions
) -> None:
    with transaction(sessions) as session:
        record_unreachable(session, two_hosts[0]["id"], "host stopped answering (keepalive)")

    response = delete(client, DB_1)

    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
    assert client.get(f"/api/v1/guests/{DB_1}").json()["gone_at"] is None


def test_a_guest_the_host_no_longer_has_is_404_and_marked_gone(
    client: TestClient, two_hosts
) -> None:
    alpha_id = two_hosts[0]["id"]
    client.app.state.sync.call(alpha_id, lambda conn: conn.domain(DB_1).undefine())

    response = delete(client, DB_1)

    # The undefine event usually marks it gone first ("is gone"); else the delete finds out.
    assert response.status_code == 404
    assert response.json()["detail"] in (
        "guest db-1 no longer exists on its host",
        f"guest db-1 ({DB_1}) is gone",
    )
    assert client.get(f"/api/v1/guests/{DB_1}").json()["status"] == "gone"
