"""Overcommit figures from the real local libvirtd: host memory, KSM, a guest's RSS and balloon."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh

pytestmark = pytest.mark.libvirtd
MIB = 1024  # in KiB


def test_the_local_host_reports_memory_ksm_and_a_running_guests_rss(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with throwaway_guest(tmp_path) as made:
        virsh("start", made.uuid)
        refreshed = client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
        assert refreshed.status_code == 200

        item = client.get(f"/api/v1/hosts/{host['id']}/overcommit").json()

    guest = next(g for g in item["guests"] if g["uuid"] == made.uuid)
    assert (guest["running"], guest["vcpus"], guest["memory_max_kib"]) == (True, 1, 64 * MIB)
    assert guest["has_balloon"] is True  # libvirt adds a virtio balloon to a KVM guest
    # RSS is the QEMU process: the guest's memory that was touched plus QEMU's own.
    assert 0 < guest["rss_kib"] < guest["memory_max_kib"] + 512 * MIB
    assert 0 < guest["memory_current_kib"] <= guest["memory_max_kib"]
    assert item["rss_kib"] >= guest["rss_kib"]
    assert 0 < item["free_kib"] <= item["memory_kib"]
    ksm = item["ksm"]
    assert isinstance(ksm["running"], bool)
    assert all(isinstance(ksm[k], int) for k in ("pages_shared", "pages_sharing", "saved_kib"))
    assert ksm["running"] is (Path("/sys/kernel/mm/ksm/run").read_text().strip() == "1")
    assert item["vcpus_running"] >= 1 and item["cpu_running"]["state"] != "unknown"
