"""Creating guests through POST /api/v1/guests, on the test driver's shared test:///default.

test:///default has 16 CPUs, 3072 MiB, the pool default-pool (100 GiB) and the network default.
Each test names what it makes with its own prefix and removes it afterwards.
"""

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import make_engine, make_session_factory, transaction
from app.models import Job
from app.models.base import utcnow
from app.virt.connection import HostConnection
from tests.conftest import add_host, post_guest
from tests.polling import finished_job
from tests.storage import (
    DEFAULT_POOL,
    TEST_DEFAULT,
    domain_names,
    remove_prefixed,
    unique_name,
    volume_names,
)

GIB = 1024**3


@pytest.fixture
def lv() -> Iterator[Any]:
    """Our own connection to test:///default, to see what the app did there."""
    conn = HostConnection(TEST_DEFAULT, keepalive=(3, 3), on_close=lambda _reason: None)
    yield conn.lv
    conn.close()


@pytest.fixture
def prefix(lv: Any) -> Iterator[str]:
    """The prefix of this test's guests and volumes, all removed afterwards."""
    name = unique_name()
    yield name
    remove_prefixed(lv, name)


@pytest.fixture
def host(client: TestClient) -> dict:
    """test:///default registered and synced, with a memory policy its own 8 GiB guest fits."""
    host = add_host(client, "shared", TEST_DEFAULT)
    policy = client.put(f"/api/v1/hosts/{host['id']}/policy", json={"memory": 4.0})
    assert policy.status_code == 200, policy.text
    return host


def refused(response, field: str, status: int = 422) -> str:
    assert (response.status_code, response.json()["field"]) == (status, field), response.text
    assert response.json()["detail"].startswith(f"{field}: ")
    return response.json()["detail"]


def test_a_guest_without_a_new_volume_is_created_at_once(
    client: TestClient, host: dict, prefix: str, lv: Any
) -> None:
    name = f"{prefix}-web"
    response = post_guest(client, host, name, vcpus=2, memory_mib=256, network="default")

    assert response.status_code == 201, response.text
    guest = response.json()
    assert response.headers["location"] == f"/api/v1/guests/{guest['uuid']}"
    assert (guest["name"], guest["host_id"], guest["status"]) == (name, host["id"], "shutoff")
    assert (guest["vcpus"], guest["memory_max_kib"]) == (2, 256 * 1024)
    assert [(n["source"], n["model"]) for n in guest["nics"]] == [("default", "virtio")]
    assert guest["disks"] == []
    assert client.get(f"/api/v1/guests/{guest['uuid']}").json()["name"] == name
    domain = ET.fromstring(lv.lookupByName(name).XMLDesc(0))
    assert domain.get("type") == "test"
    assert domain.find("devices/graphics").attrib | {"port": "-1"} == {
        "type": "vnc", "port": "-1", "autoport": "yes", "listen": "127.0.0.1",
    }  # fmt: skip
    assert domain.find("devices/memballoon").get("model") == "virtio"
    assert domain.find("devices/serial") is not None
    assert domain.find("features/acpi") is not None


def test_a_new_volume_is_made_by_a_job_that_ends_with_the_guest_running(
    client: TestClient, host: dict, prefix: str, lv: Any
) -> None:
    name = f"{prefix}-db"
    response = post_guest(
        client, host, name, disk={"pool": DEFAULT_POOL, "size_gib": 2}, start=True
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["kind"], job["host_id"], job["status"]) == ("guest.create", host["id"], "queued")
    done = finished_job(client, job["id"])
    assert (done["status"], done["progress"], done["error"]) == ("succeeded", 1.0, None)
    assert done["result"] == {"guest_uuid": job["guest_uuid"]}
    assert done["started_at"] and done["finished_at"]
    guest = client.get(f"/api/v1/guests/{job['guest_uuid']}").json()
    assert (guest["name"], guest["status"]) == (name, "running")
    assert guest["disks"] == [
        {"target": "vda", "device": "disk", "source": f"/{DEFAULT_POOL}/{name}.qcow2",
         "format": "qcow2", "bus": "virtio"}
    ]  # fmt: skip
    volume = lv.storagePoolLookupByName(DEFAULT_POOL).storageVolLookupByName(f"{name}.qcow2")
    assert volume.info()[1] == 2 * GIB


def test_an_existing_volume_and_an_iso_are_attached_as_disk_and_cdrom(
    client: TestClient, host: dict, prefix: str, lv: Any
) -> None:
    pool = lv.storagePoolLookupByName(DEFAULT_POOL)
    for volume, fmt in ((f"{prefix}-data.qcow2", "qcow2"), (f"{prefix}-install.iso", "iso")):
        xml = ET.Element("volume")
        ET.SubElement(xml, "name").text = volume
        ET.SubElement(xml, "capacity", unit="MiB").text = "64"
        ET.SubElement(ET.SubElement(xml, "target"), "format", type=fmt)
        pool.createXML(ET.tostring(xml, encoding="unicode"), 0)
    listed = client.get(f"/api/v1/hosts/{host['id']}/pools/{DEFAULT_POOL}/volumes").json()
    mine = {v["name"]: v["iso"] for v in listed if v["name"].startswith(prefix)}
    assert mine == {f"{prefix}-data.qcow2": False, f"{prefix}-install.iso": True}

    response = post_guest(
        client, host, f"{prefix}-vm",
        disk={"pool": DEFAULT_POOL, "volume": f"{prefix}-data.qcow2", "format": "qcow2"},
        cdrom={"pool": DEFAULT_POOL, "volume": f"{prefix}-install.iso"},
    )  # fmt: skip

    assert response.status_code == 201, response.text
    disks = {d["device"]: d for d in response.json()["disks"]}
    assert disks["disk"]["source"] == f"/{DEFAULT_POOL}/{prefix}-data.qcow2"
    assert (disks["disk"]["format"], disks["disk"]["bus"]) == ("qcow2", "virtio")
    assert disks["cdrom"]["source"] == f"/{DEFAULT_POOL}/{prefix}-install.iso"
    assert disks["cdrom"]["format"] == "raw"
    boots = [b.get("dev") for b in ET.fromstring(response.json()["domain_xml"]).iter("boot")]
    assert boots == ["hd", "cdrom"]


BAD_NAMES = ["a<b>", "../x", "-rf", ".hidden", "x" * 300, "a\x00b", "new\nline", "tab\t", "",
             "sp ace", "ünï", "a/b"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_naming_the_field_and_leaves_nothing(
    client: TestClient, host: dict, lv: Any, name: str
) -> None:
    before = (domain_names(lv), volume_names(lv))

    response = post_guest(
        client, host, name, disk={"pool": DEFAULT_POOL, "size_gib": 1}, start=True
    )

    refused(response, "name")
    assert (domain_names(lv), volume_names(lv)) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": 10**12}, "vcpus"),
        ({"vcpus": 17}, "vcpus"),  # the host has 16 CPUs
        ({"memory_mib": 0}, "memory_mib"),
        ({"memory_mib": -64}, "memory_mib"),
        ({"memory_mib": 63}, "memory_mib"),
        ({"memory_mib": 3073}, "memory_mib"),  # the host has 3072 MiB
        ({"memory_mib": 10**15}, "memory_mib"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": 0}}, "disk.size_gib"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": -1}}, "disk.size_gib"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": 10**9}}, "disk.size_gib"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": 101}}, "disk.size_gib"),  # pool: 100 GiB
        ({"disk": {"pool": DEFAULT_POOL}}, "disk.size_gib"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": 1, "volume": "x"}}, "disk.volume"),
        ({"disk": {"pool": "no-such-pool", "size_gib": 1}}, "disk.pool"),
        ({"disk": {"pool": "", "size_gib": 1}}, "disk.pool"),
        ({"disk": {"pool": DEFAULT_POOL, "volume": "no-such.qcow2"}}, "disk.volume"),
        ({"cdrom": {"pool": DEFAULT_POOL, "volume": "no-such.iso"}}, "cdrom.volume"),
        ({"disk": {"pool": DEFAULT_POOL, "volume": "x", "format": "vmdk"}}, "disk.format"),
        ({"disk": {"pool": DEFAULT_POOL, "size_gib": 1, "format": "raw"}}, "disk.format"),
        ({"cdrom": {"pool": "no-such-pool", "volume": "x.iso"}}, "cdrom.pool"),
        ({"network": "no-such-network"}, "network"),
        ({"firmware": "uefi"}, "firmware"),  # the test driver offers none
        ({"firmware": "coreboot"}, "firmware"),
        ({"cpu_mode": "turbo"}, "cpu_mode"),
        ({"cpu_mode": "host-model"}, "cpu_mode"),  # the test driver models no CPU modes
        ({"cpu_mode": "custom"}, "cpu_model"),
        ({"cpu_model": "EPYC"}, "cpu_model"),
        ({"cpu_mode": "custom", "cpu_model": "EPYC"}, "cpu_mode"),
        ({"host_id": 987654}, "host_id"),
    ],
)
def test_bad_numbers_storage_and_devices_are_refused_naming_the_field_and_leave_nothing(
    client: TestClient, host: dict, prefix: str, lv: Any, fields: dict, field: str
) -> None:
    before = (domain_names(lv), volume_names(lv))
    fields = {"disk": {"pool": DEFAULT_POOL, "size_gib": 1}, "start": True, **fields}

    response = post_guest(client, host, f"{prefix}-bad", **fields)

    refused(response, field)
    assert (domain_names(lv), volume_names(lv)) == before


def test_wrong_types_and_unknown_fields_are_refused_by_the_schema(
    client: TestClient, host: dict, prefix: str
) -> None:
    wrong_type = post_guest(client, host, f"{prefix}-x", vcpus="two")
    unknown = post_guest(client, host, f"{prefix}-x", memory=512)

    assert wrong_type.status_code == 422 and wrong_type.json()["detail"].startswith("vcpus: ")
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("memory: ")


def test_a_name_taken_on_the_host_is_a_conflict_even_when_the_inventory_has_not_seen_it(
    client: TestClient, host: dict, prefix: str, lv: Any
) -> None:
    name = f"{prefix}-twin"
    domain = ET.Element("domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
    lv.defineXML(ET.tostring(domain, encoding="unicode"))  # behind the inventory's back
    before = volume_names(lv)

    response = post_guest(client, host, name, disk={"pool": DEFAULT_POOL, "size_gib": 1})

    assert "already exists on this host" in refused(response, "name", 409)
    assert volume_names(lv) == before


def test_a_volume_of_the_new_guests_name_is_a_conflict_and_is_left_alone(
    client: TestClient, host: dict, prefix: str, lv: Any
) -> None:
    name = f"{prefix}-vol"
    xml = f"<volume><name>{name}.qcow2</name><capacity>1024</capacity></volume>"
    lv.storagePoolLookupByName(DEFAULT_POOL).createXML(xml, 0)

    response = post_guest(client, host, name, disk={"pool": DEFAULT_POOL, "size_gib": 1})

    assert "already has a volume" in refused(response, "name", 409)
    assert f"{name}.qcow2" in volume_names(lv)
    assert name not in domain_names(lv)


def test_force_is_for_admins_and_lets_them_exceed_the_host_cpus(
    make_client, host: dict, prefix: str, lv: Any
) -> None:
    operator = make_client(role="operator")
    admin = make_client(role="admin")
    for app in (operator, admin):  # each app connects to the host on its own
        assert (
            app.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15}).status_code == 200
        )

    by_operator = post_guest(operator, host, f"{prefix}-op", vcpus=32, force=True)
    unforced = post_guest(admin, host, f"{prefix}-ad", vcpus=32)
    forced = post_guest(admin, host, f"{prefix}-ad", vcpus=32, force=True)
    plain = post_guest(operator, host, f"{prefix}-op", vcpus=16)

    assert "only an admin" in refused(by_operator, "force", 403)
    assert "needs force" in refused(unforced, "vcpus")
    assert (forced.status_code, forced.json()["vcpus"]) == (201, 32)
    assert (plain.status_code, plain.json()["vcpus"]) == (201, 16)


def test_a_host_that_is_not_connected_answers_503(
    client: TestClient, silent_listener: int, prefix: str
) -> None:
    uri = f"test+tcp://127.0.0.1:{silent_listener}/default"
    created = client.post("/api/v1/hosts", json={"name": "mute", "uri": uri})
    host_id = created.json()["id"]

    response = client.post(
        "/api/v1/guests",
        json={"host_id": host_id, "name": f"{prefix}-x", "vcpus": 1, "memory_mib": 64},
    )
    pools = client.get(f"/api/v1/hosts/{host_id}/pools")
    networks = client.get(f"/api/v1/hosts/{host_id}/networks")

    assert "not connected" in refused(response, "host_id", 503)
    assert (pools.status_code, networks.status_code) == (503, 503)


def test_pools_volumes_and_networks_come_from_the_host(
    client: TestClient, host: dict, two_hosts: tuple[dict, dict]
) -> None:
    pools = client.get(f"/api/v1/hosts/{host['id']}/pools")
    networks = client.get(f"/api/v1/hosts/{host['id']}/networks")
    alpha_pools = client.get(f"/api/v1/hosts/{two_hosts[0]['id']}/pools")

    assert pools.status_code == 200
    assert [(p["name"], p["type"], p["active"], p["capacity"]) for p in pools.json()] == [
        (DEFAULT_POOL, "dir", True, 100 * GIB)
    ]
    assert networks.json() == [
        {
            "name": "default",
            "active": True,
            "forward": "nat",
            "bridge": "virbr0",
            "autostart": False,
        }
    ]
    assert alpha_pools.json() == []  # the node file defines none
    missing_pool = client.get(f"/api/v1/hosts/{host['id']}/pools/nope/volumes")
    missing_host = client.get("/api/v1/hosts/987654/pools")
    assert (missing_pool.status_code, missing_host.status_code) == (404, 404)


def test_the_create_is_audited_with_the_guest_as_target(
    client: TestClient, host: dict, prefix: str
) -> None:
    guest = post_guest(client, host, f"{prefix}-aud").json()
    refusal = post_guest(client, host, "-bad")

    entries = client.get("/api/v1/audit", params={"action": "guest.create"}).json()["items"]

    assert refusal.status_code == 422
    assert (entries[0]["result"], entries[0]["target"]) == (
        "failed",
        f"host:{host['id']} ({host['name']})",
    )
    assert (entries[1]["result"], entries[1]["target"]) == (
        "ok",
        f"guest:{guest['uuid']} ({prefix}-aud)",
    )


def test_a_job_left_running_by_a_dead_process_is_failed_as_interrupted_at_startup(
    make_client, database_url: str
) -> None:
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        # Its instance beat its heart last two minutes ago: that instance is gone.
        beaten = utcnow() - timedelta(minutes=2)
        job = Job(kind="guest.create", status="running", progress=0.4, message="defining",
                  owner="gone-instance", heartbeat_at=beaten)  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    engine.dispose()

    client = make_client(role="viewer")
    shown = client.get(f"/api/v1/jobs/{job_id}").json()

    assert (shown["status"], shown["progress"]) == ("failed", 0.4)
    assert shown["error"].startswith("interrupted")
    assert client.get("/api/v1/jobs/987654").status_code == 404
