"""Editing a guest on the real libvirtd: a new vCPU maximum is saved for the next start, and a
vCPU added to the running guest is hot-plugged into QEMU and kept in the config, as
`virsh vcpucount` shows."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh

pytestmark = pytest.mark.libvirtd


def vcpucount(name: str) -> dict[str, int]:
    """`virsh vcpucount`: {"maximum config": 2, "current live": 1, ...}."""
    lines = (line.rsplit(None, 1) for line in virsh("vcpucount", name).splitlines() if line)
    return {" ".join(key.split()): int(value) for key, value in lines}


def test_a_vcpu_added_to_a_running_guest_is_hot_plugged_and_kept_in_its_config(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with throwaway_guest(tmp_path) as guest:
        path = f"/api/v1/guests/{guest.uuid}/settings"
        client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
        maximum = client.patch(path, json={"vcpus_max": 2})
        virsh("start", guest.uuid)
        client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
        added = client.patch(path, json={"vcpus": 2})
        counts = vcpucount(guest.name)

    assert maximum.status_code == 200, maximum.text
    assert (maximum.json()["live"], maximum.json()["next_start"]) == ([], [])
    assert added.status_code == 200, added.text
    assert (added.json()["live"], added.json()["next_start"]) == (["vcpus"], [])
    assert counts["maximum config"] == 2 and counts["maximum live"] == 2
    assert counts["current live"] == 2 and counts["current config"] == 2
