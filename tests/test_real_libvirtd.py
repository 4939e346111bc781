"""The inventory follows a real KVM guest on the local libvirtd (qemu:///system)."""

import os
import signal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.libvirtd import SYSTEM_URI, throwaway_guest, virsh
from tests.polling import until
from tests.serve import running_server

pytestmark = pytest.mark.libvirtd


def refresh(client: TestClient, host_id: int) -> None:
    response = client.post(f"/api/v1/hosts/{host_id}/refresh", params={"wait": 15})
    assert response.status_code == 200, response.text


def test_local_host_facts_come_from_the_real_hypervisor(client: TestClient) -> None:
    host = add_host(client, "local", SYSTEM_URI)

    assert host["connection"] == "connected"
    assert host["hypervisor"] == "QEMU"
    assert host["kvm_available"] is Path("/dev/kvm").exists()
    assert host["memory_source"] == "host /proc/meminfo (virNodeGetMemoryStats)"
    meminfo_total = int(Path("/proc/meminfo").read_text().split()[1])
    assert host["memory_kib"] == pytest.approx(meminfo_total, rel=0.01)
    assert host["cpus_online"] >= 1
    assert host["cpu_model"]


def test_a_kvm_guest_is_synced_then_stopped_then_marked_gone(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with throwaway_guest(tmp_path) as made:
        virsh("start", made.uuid)
        refresh(client, host["id"])

        guest = client.get(f"/api/v1/guests/{made.uuid}").json()
        assert guest["name"] == made.name
        assert guest["status"] == "running"
        assert (guest["vcpus"], guest["memory_max_kib"]) == (1, 64 * 1024)
        assert guest["disks"][0]["source"] == str(made.disk)
        assert guest["disks"][0]["format"] == "qcow2"
        page = client.get(f"/hosts/{host['id']}", params={"q": made.name})
        assert made.name in page.text and "badge-running" in page.text

        virsh("destroy", made.uuid)
        refresh(client, host["id"])
        assert client.get(f"/api/v1/guests/{made.uuid}").json()["status"] == "shutoff"

        virsh("undefine", made.uuid)
        refresh(client, host["id"])
        gone = client.get(f"/api/v1/guests/{made.uuid}").json()
        assert gone["status"] == "gone"
        assert gone["gone_at"] is not None
        listed = client.get("/api/v1/guests", params={"q": made.name}).json()
        assert listed["items"] == []
        gone_list = client.get("/api/v1/guests", params={"q": made.name, "state": "gone"})
        assert [g["uuid"] for g in gone_list.json()["items"]] == [made.uuid]


def worker_children(pid: int) -> list[int]:
    """The `virtdeck worker` child processes of the server with this pid (each thread lists the
    children it started)."""
    children = [
        child for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]  # fmt: skip
    return [
        int(child)
        for child in children
        if b"worker" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    ]


def test_serve_with_defaults_runs_its_worker_registers_the_local_hypervisor_and_shows_its_guests(
    tmp_path: Path,
) -> None:
    with throwaway_guest(tmp_path) as made:
        # The settings `make run` uses, but for the database file and the port.
        with running_server(tmp_path, {"VIRTDECK_SYNC_INTERVAL": "60"}) as server:
            (worker,) = worker_children(server.pid)
            hosts = server.api("GET", "/hosts").json()
            assert [(h["name"], h["uri"]) for h in hosts] == [("local", SYSTEM_URI)]
            synced = server.api("POST", f"/hosts/{hosts[0]['id']}/refresh", params={"wait": 15})
            assert synced.status_code == 200

            auth = {"Authorization": f"Bearer {server.token}"}
            overview = httpx.get(f"{server.url}/", headers=auth).text
            host_page = httpx.get(
                f"{server.url}/hosts/{hosts[0]['id']}", params={"q": made.name}, headers=auth
            )
            # The web process starts the guest on its own connection; the worker hears of it
            # by event (the interval is a minute) and a virsh destroy reaches the API the same way.
            started = server.api("POST", f"/guests/{made.uuid}/actions/start")
            virsh("destroy", made.uuid)
            until(lambda: server.api("GET", f"/guests/{made.uuid}").json()["state"] == "shutoff",
                  timeout=5, what="the destroy never reached the API")  # fmt: skip

            os.kill(worker, signal.SIGKILL)  # the server starts its worker again
            until(lambda: worker_children(server.pid) not in ([], [worker]), timeout=10)
            again = server.api("POST", f"/hosts/{hosts[0]['id']}/refresh", params={"wait": 30})

        assert 'data-host="local"' in overview and "badge-connected" in overview
        assert made.name in host_page.text and "badge-shutoff" in host_page.text
        assert started.status_code == 200 and started.json()["status"] == "running"
        assert again.status_code == 200 and again.json()["synced"] is True


def test_a_kvm_guest_is_started_suspended_resumed_shut_down_and_forced_off(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with throwaway_guest(tmp_path) as made:
        refresh(client, host["id"])

        def act(action: str) -> dict:
            response = client.post(f"/api/v1/guests/{made.uuid}/actions/{action}")
            assert response.status_code == 200, response.text
            return response.json()

        def virsh_state() -> str:
            return virsh("domstate", made.uuid).strip()

        assert act("start")["status"] == "running" and virsh_state() == "running"
        assert act("suspend")["status"] == "paused" and virsh_state() == "paused"
        assert act("resume")["status"] == "running" and virsh_state() == "running"
        # No OS answers ACPI in this guest: it stays "shutting down" until forced off.
        asked = act("shutdown")
        assert asked["status"] == "shutting down" and asked["actions"] == [
            "force_off",
            "autostart_on",
        ]
        refresh(client, host["id"])
        assert client.get(f"/api/v1/guests/{made.uuid}").json()["status"] == "shutting down"
        assert act("force_off")["status"] == "shutoff" and virsh_state() == "shut off"
        assert act("autostart_on")["autostart"] is True
        assert virsh("dominfo", made.uuid).count("Autostart:      enable") == 1
