"""Creating guests on the real libvirtd (qemu:///system), in dir pools the tests make and remove."""

import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import VirtdeckError
from app.services.guest_create import CreatePlan, NewDisk, build_guest
from app.virt.build import GuestPlan, host_platform
from app.virt.connection import HostConnection
from tests.conftest import post_guest
from tests.libvirtd import IMAGES, SYSTEM_URI, virsh
from tests.polling import finished_job
from tests.storage import (
    pool_volumes,
    throwaway_pool,
    unique_name,
    virsh_lines,
)

pytestmark = pytest.mark.libvirtd
GIB = 1024**3


@pytest.fixture
def pool() -> Iterator[str]:
    """A fresh dir pool; it goes, with its volumes, after the test's guests."""
    with throwaway_pool() as name:
        yield name


def dominfo(name: str) -> dict[str, str]:
    lines = (line.split(":", 1) for line in virsh("dominfo", name).splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in lines}


def test_a_guest_with_a_new_volume_is_made_by_a_job_and_runs(
    client: TestClient, local: dict, pool: str, made: list[str]
) -> None:
    name = unique_name()
    made.append(name)

    response = post_guest(client, local, name, disk={"pool": pool, "size_gib": 1}, start=True)

    assert response.status_code == 202, response.text
    job = finished_job(client, response.json()["id"], timeout=60)
    assert job["status"] == "succeeded", job
    info = dominfo(name)
    assert (info["CPU(s)"], info["Max memory"], info["State"]) == ("1", "131072 KiB", "running")
    assert pool_volumes(pool) == [f"{name}.qcow2"]
    volume_path = IMAGES / pool / f"{name}.qcow2"
    assert re.search(r"Capacity:\s+1\.00 GiB", virsh("vol-info", str(volume_path)))
    guest = client.get(f"/api/v1/guests/{job['result']['guest_uuid']}").json()
    assert (guest["status"], guest["disks"][0]["source"]) == ("running", str(volume_path))
    xml = virsh("dumpxml", name)
    assert f"<domain type='{'kvm' if Path('/dev/kvm').exists() else 'qemu'}'" in xml
    volumes = client.get(f"/api/v1/hosts/{local['id']}/pools/{pool}/volumes").json()
    assert [(v["name"], v["format"], v["capacity"]) for v in volumes] == [
        (f"{name}.qcow2", "qcow2", GIB)
    ]


BAD = [
    ({"name": "a<b>"}, "name"),
    ({"name": "../x"}, "name"),
    ({"name": "-rf"}, "name"),
    ({"name": "x" * 300}, "name"),
    ({"name": "bell\x07"}, "name"),
    ({"vcpus": 0}, "vcpus"),
    ({"vcpus": -2}, "vcpus"),
    ({"vcpus": 10**9}, "vcpus"),
    ({"memory_mib": 0}, "memory_mib"),
    ({"memory_mib": -1}, "memory_mib"),
    ({"memory_mib": 2**50}, "memory_mib"),
]


def test_bad_input_is_refused_and_leaves_the_host_as_it_was(
    client: TestClient, local: dict, pool: str
) -> None:
    pools = client.get(f"/api/v1/hosts/{local['id']}/pools").json()
    free = next(p["available"] for p in pools if p["name"] == pool)
    cases = [*BAD, ({"disk": {"pool": pool, "size_gib": free // GIB + 1}}, "disk.size_gib")]
    before = (virsh_lines("list", "--all", "--name"), pool_volumes(pool))
    sent, answers = set(), []

    for fields, field in cases:
        body = {"name": unique_name(), "disk": {"pool": pool, "size_gib": 1}, "start": True}
        body.update(fields)
        sent.add(body["name"])
        response = post_guest(client, local, **body)
        answers.append((response.status_code, response.json().get("field")))
        assert response.json()["detail"].startswith(f"{field}: "), response.text

    assert answers == [(422, field) for _, field in cases]
    domains, volumes = virsh_lines("list", "--all", "--name"), pool_volumes(pool)
    # Other test runs may share this libvirtd: of its guests, only ours must be as they were.
    assert (set(domains) ^ set(before[0])) & sent == set()
    assert volumes == before[1] == []


def test_a_uefi_guest_starts_where_the_host_offers_uefi(
    client: TestClient, local: dict, made: list[str]
) -> None:
    name = unique_name()
    made.append(name)

    response = post_guest(client, local, name, firmware="uefi", start=True)

    if response.status_code == 422 and response.json()["field"] == "firmware":
        pytest.skip("this host offers no UEFI firmware")
    assert response.status_code == 201, response.text
    assert "<os firmware='efi'>" in virsh("dumpxml", "--inactive", name)
    assert re.search(r"<loader[^>]*type='pflash'[^>]*>/usr/share/OVMF/", virsh("dumpxml", name))
    # It started; under nested KVM (as on this machine) OVMF can then stop on an emulation
    # failure, which pauses the guest.
    assert response.json()["status"] in ("running", "paused")
    assert dominfo(name)["Id"] != "-"


def test_a_guest_that_cannot_start_is_undefined_and_a_disk_it_did_not_make_is_kept(
    client: TestClient, local: dict, pool: str, made: list[str]
) -> None:
    first, second = unique_name(), unique_name()
    made.extend([first, second])
    job = post_guest(client, local, first, disk={"pool": pool, "size_gib": 1}, start=True).json()
    assert finished_job(client, job["id"], timeout=60)["status"] == "succeeded"

    # QEMU locks a running guest's image: a second guest on it cannot start.
    response = post_guest(
        client,
        local,
        second,
        disk={"pool": pool, "volume": f"{first}.qcow2", "format": "qcow2"},
        start=True,
    )

    assert response.status_code >= 400
    # QEMU says so ("Failed to get write lock"), unless it exits on the lock before libvirt
    # reaches its monitor: then libvirt's words are about the monitor socket.
    detail = response.json()["detail"]
    assert "lock" in detail or "failed to connect to monitor socket" in detail, detail
    assert second not in virsh_lines("list", "--all", "--name")
    assert pool_volumes(pool) == [f"{first}.qcow2"]
    assert dominfo(first)["State"] == "running"


def test_a_define_that_fails_after_the_volume_was_made_removes_the_volume(
    pool: str, made: list[str]
) -> None:
    name = unique_name()
    made.append(name)
    conn = HostConnection(SYSTEM_URI, keepalive=(3, 3), on_close=lambda _reason: None)
    try:
        platform = replace(host_platform(conn), emulator="/usr/bin/vdtest-no-such-emulator")
        guest = GuestPlan(
            uuid="c0000000-0000-4000-8000-0000000000a1", name=name, vcpus=1, memory_mib=64,
            platform=platform,
        )  # fmt: skip
        plan = CreatePlan(host_id=1, guest=guest, new_disk=NewDisk(pool, 1), start=True)

        with pytest.raises(VirtdeckError, match="vdtest-no-such-emulator"):
            build_guest(conn, plan)
    finally:
        conn.close()

    assert pool_volumes(pool) == []
    assert name not in virsh_lines("list", "--all", "--name")


def planted_header(pool: str, name: str, backing: str = "/dev/sda") -> Path:
    """A volume whose bytes are a qcow2 header naming a host file as its backing file: what a
    guest can write into its own raw disk."""
    path = IMAGES / pool / name
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing,
            "-F",
            "raw",
            str(path),
            "16M",
        ],
        check=True,
    )
    virsh("pool-refresh", pool)
    return path


@pytest.mark.parametrize("device", ["disk", "cdrom"])
def test_a_raw_volume_carrying_a_qcow2_header_with_a_backing_file_is_refused(
    client: TestClient, local: dict, pool: str, made: list[str], device: str
) -> None:
    name, volume = unique_name(), unique_name("vdtest-raw")
    made.append(name)
    planted_header(pool, volume)

    response = post_guest(client, local, name, **{device: {"pool": pool, "volume": volume}})

    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"{device}.volume"
    assert "backing file" in response.json()["detail"]
    assert name not in virsh_lines("list", "--all", "--name")
    defined = "\n".join(
        virsh("dumpxml", n, "--inactive") for n in virsh_lines("list", "--all", "--name")
    )
    assert "/dev/sda" not in defined


def test_a_volume_asked_for_as_qcow2_is_refused_when_its_header_names_a_backing_file(
    client: TestClient, local: dict, pool: str, made: list[str]
) -> None:
    name, volume = unique_name(), unique_name("vdtest-q")
    made.append(name)
    planted_header(pool, volume)

    response = post_guest(
        client, local, name, disk={"pool": pool, "volume": volume, "format": "qcow2"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "disk.volume"
    assert name not in virsh_lines("list", "--all", "--name")


def test_an_existing_volume_is_attached_in_the_format_the_request_names(
    client: TestClient, local: dict, pool: str, made: list[str]
) -> None:
    raw, qcow2 = unique_name(), unique_name()
    made.extend([raw, qcow2])
    (IMAGES / pool / f"{raw}.img").write_bytes(bytes(1 << 20))
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(IMAGES / pool / f"{qcow2}.qcow2"), "16M"],
        check=True,
    )
    virsh("pool-refresh", pool)

    as_raw = post_guest(client, local, raw, disk={"pool": pool, "volume": f"{raw}.img"})
    as_qcow2 = post_guest(
        client, local, qcow2, disk={"pool": pool, "volume": f"{qcow2}.qcow2", "format": "qcow2"}
    )

    assert as_raw.status_code == 201, as_raw.text
    assert as_qcow2.status_code == 201, as_qcow2.text
    assert [d["format"] for d in as_raw.json()["disks"]] == ["raw"]
    assert [d["format"] for d in as_qcow2.json()["disks"]] == ["qcow2"]
    # libvirt never reads a backing chain from the header of a disk virtdeck attached.
    assert "<backingStore/>" in virsh("dumpxml", qcow2, "--inactive")
