"""The backup API's rules: one at a time per guest, cancel, retention, delete, refusals."""

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.backups import (
    BACKUP_TIMEOUT,
    back_up,
    backup_files_left,
    start_backup,
    wait_until_copying,
)
from tests.conftest import add_host, node_uri
from tests.libvirtd import IMAGES, SYSTEM_URI, qemu_io, throwaway_guest, virsh
from tests.polling import finished_job
from tests.storage import throwaway_pool

ALPHA_1 = "a1000000-0000-4000-8000-000000000001"


def test_a_disk_outside_any_pool_is_refused_naming_it(client: TestClient) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))

    refused = client.post(f"/api/v1/guests/{ALPHA_1}/backups")

    assert refused.status_code == 409
    assert refused.json()["field"] == "disks"
    assert "not a volume of an active storage pool" in refused.json()["detail"]
    assert client.get("/api/v1/backups").json()["total"] == 0
    assert client.get(f"/api/v1/guests/{ALPHA_1}").json()["busy_action"] is None


def test_unknown_backups_and_bad_filters(client: TestClient) -> None:
    assert client.get("/api/v1/backups/999999").status_code == 404
    assert client.post("/api/v1/backups/999999/verify").status_code == 404
    assert client.delete("/api/v1/backups/999999").status_code == 404
    bad = client.get("/api/v1/backups", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "limit"


@pytest.mark.libvirtd
def test_one_backup_at_a_time_cancel_and_the_rules_of_restore(make_client, tmp_path: Path) -> None:
    client = make_client(backup_bandwidth_mib=4)
    root = Path(client.app.state.settings.backup_dir)
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        assert qemu_io(guest.disk, "write -P 0x66 0 8M").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        operator = make_client(role="operator")  # an app started after the host was added

        first = start_backup(client, guest.uuid)
        wait_until_copying(client, first["job"]["id"])
        second = client.post(f"/api/v1/guests/{guest.uuid}/backups")
        snapshot = client.post(f"/api/v1/guests/{guest.uuid}/snapshots", json={"name": "s"})
        cancel = operator.post(f"/api/v1/jobs/{first['job']['id']}/cancel")
        job = finished_job(client, first["job"]["id"], timeout=BACKUP_TIMEOUT)
        cancelled = client.get(f"/api/v1/backups/{first['backup']['id']}").json()
        again = operator.post(f"/api/v1/jobs/{first['job']['id']}/cancel")

        assert second.status_code == 409 and second.json()["busy_action"] == "backup"
        assert snapshot.status_code == 409
        assert cancel.status_code == 202
        assert job["status"] == "cancelled"
        assert (cancelled["status"], cancelled["error"]) == ("cancelled", "cancelled")
        assert backup_files_left(root) == []
        assert again.status_code == 409 and again.json()["status"] == "cancelled"

        fast = make_client()
        done = back_up(fast, guest.uuid)
        virsh("start", guest.uuid)
        try:
            running = fast.post(f"/api/v1/backups/{done['id']}/restore", json={"mode": "in_place"})
        finally:
            virsh("destroy", guest.uuid)
        by_operator = operator.post(
            f"/api/v1/backups/{done['id']}/restore", json={"mode": "in_place"}
        )
        bad_name = operator.post(
            f"/api/v1/backups/{done['id']}/restore", json={"mode": "new", "name": "a b"}
        )
        taken_name = operator.post(
            f"/api/v1/backups/{done['id']}/restore", json={"mode": "new", "name": guest.name}
        )
        bad_mode = operator.post(f"/api/v1/backups/{done['id']}/restore", json={"mode": "sideways"})
        by_viewer = make_client(role="viewer").post(f"/api/v1/guests/{guest.uuid}/backups")

        assert running.status_code == 409 and running.json()["state"] == "running"
        assert by_operator.status_code == 403 and by_operator.json()["field"] == "mode"
        assert bad_name.status_code == 422 and bad_name.json()["field"] == "name"
        assert taken_name.status_code == 409 and taken_name.json()["field"] == "name"
        assert bad_mode.status_code == 422 and bad_mode.json()["field"] == "mode"
        assert by_viewer.status_code == 403


@pytest.mark.libvirtd
def test_retention_keeps_the_newest_and_delete_removes_the_files(
    make_client, tmp_path: Path
) -> None:
    client = make_client(backup_keep=2)
    root = Path(client.app.state.settings.backup_dir)
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        add_host(client, "local", SYSTEM_URI)
        taken = []
        for _ in range(3):
            taken.append(back_up(client, guest.uuid))
            time.sleep(0.01)
        listed = client.get("/api/v1/backups", params={"guest_uuid": guest.uuid}).json()
        oldest_dir = root / taken[0]["path"]

        assert [b["id"] for b in listed["items"]] == [taken[2]["id"], taken[1]["id"]]
        assert listed["total"] == 2
        assert not oldest_dir.exists()
        assert client.get(f"/api/v1/backups/{taken[0]['id']}").status_code == 404

        operator = make_client(role="operator")
        refused = operator.delete(f"/api/v1/backups/{taken[1]['id']}")
        deleted = client.delete(f"/api/v1/backups/{taken[1]['id']}")
        succeeded = client.get("/api/v1/backups", params={"status": "succeeded"}).json()

        assert refused.status_code == 403
        assert deleted.status_code == 204
        assert not (root / taken[1]["path"]).exists()
        assert [b["id"] for b in succeeded["items"]] == [taken[2]["id"]]
        assert sorted(p.name for p in (root / taken[2]["path"]).iterdir()) == [
            "disk-vda.qcow2",
            "domain.xml",
            "manifest.json",
        ]


def test_a_backup_directory_made_by_an_older_version_is_closed_to_others_at_startup(
    make_client, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    (root / "host" / "guest").mkdir(parents=True)
    root.chmod(0o755)

    make_client(backup_dir=str(root))

    assert oct(root.stat().st_mode & 0o777) == "0o700"
