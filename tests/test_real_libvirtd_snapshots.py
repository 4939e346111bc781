"""Snapshots on the real libvirtd: a revert really puts the qcow2 disk's bytes back."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.libvirtd import SYSTEM_URI, holds, qemu_io, throwaway_guest, virsh

pytestmark = pytest.mark.libvirtd


def test_revert_puts_the_disk_back_and_delete_removes_the_snapshot(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_guest(tmp_path) as guest:
        assert qemu_io(guest.disk, "write -P 0xab 0 64k").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        base = f"/api/v1/guests/{guest.uuid}/snapshots"

        taken = client.post(base, json={"name": "before", "description": "0xab"})
        assert qemu_io(guest.disk, "write -P 0xcd 0 64k").returncode == 0
        overwritten = holds(guest.disk, "0xcd")
        reverted = client.post(f"{base}/before/revert")
        back = holds(guest.disk, "0xab")
        listed = client.get(base).json()["items"]
        deleted = client.delete(f"{base}/before")

        assert taken.status_code == 201, taken.text
        assert (taken.json()["state"], taken.json()["external"]) == ("shutoff", False)
        assert overwritten
        assert reverted.status_code == 200, reverted.text
        assert back
        assert [(s["name"], s["is_current"]) for s in listed] == [("before", True)]
        assert deleted.status_code == 204, deleted.text
        assert virsh("snapshot-list", guest.uuid, "--name").split() == []
        assert client.get(base).json()["items"] == []


def test_reverting_an_external_snapshot_is_refused_in_plain_words(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_guest(tmp_path) as guest:
        overlay = tmp_path / f"{guest.name}-ext.qcow2"
        virsh(
            "snapshot-create-as", guest.uuid, "ext", "--disk-only",
            "--diskspec", f"vda,file={overlay}",
        )  # fmt: skip
        try:
            add_host(client, "local", SYSTEM_URI)
            listed = client.get(f"/api/v1/guests/{guest.uuid}/snapshots").json()["items"]
            refused = client.post(f"/api/v1/guests/{guest.uuid}/snapshots/ext/revert")

            assert [(s["name"], s["external"]) for s in listed] == [("ext", True)]
            assert refused.status_code == 409
            assert "cannot revert to external snapshots" in refused.json()["detail"]
            assert "ext is an external snapshot" in refused.json()["detail"]
        finally:
            virsh("snapshot-delete", guest.uuid, "ext", "--metadata", check=False)
            overlay.unlink(missing_ok=True)
