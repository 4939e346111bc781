"""Guests from a base image with cloud-init on the real libvirtd (qemu:///system): the disk is a
grown copy or a qcow2 overlay, the NoCloud seed is a read-only CD-ROM; in throwaway dir pools."""

import email
import io
import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pycdlib
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient

from app.errors import VirtdeckError
from app.services.guest_create import (
    BaseImage,
    CloudInit,
    CreateRequest,
    NewDisk,
    build_guest,
    check_on_host,
)
from app.services.guest_create.cloud_init import seed
from app.virt.connection import HostConnection
from tests.conftest import post_guest
from tests.libvirtd import IMAGES, SYSTEM_URI, virsh
from tests.polling import finished_job
from tests.storage import pool_volumes, throwaway_pool, unique_name, virsh_lines

pytestmark = pytest.mark.libvirtd
GIB = 1024**3
PASSWORD = "vdtest correct horse"
USER_DATA = "#cloud-config\nruncmd:\n  - [touch, /var/tmp/vdtest]\n"


@pytest.fixture
def pool() -> Iterator[str]:
    """A fresh dir pool; it goes, with its volumes, after the test's guests."""
    with throwaway_pool("vdtest-cloud") as name:
        yield name


def ssh_key() -> str:
    """A new Ed25519 public key line."""
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " vd@test"


def make_image(
    pool: str, name: str, *, fmt: str = "qcow2", size: str = "64M", backing=None
) -> Path:
    """A base image made by qemu-img in the pool (with a backing file when asked)."""
    path = IMAGES / pool / name
    extra = ["-b", str(backing), "-F", "qcow2"] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *extra, str(path), size], check=True)
    virsh("pool-refresh", pool)
    return path


def image_info(path: Path, fmt: str) -> dict:
    """qemu-img's view of an image opened in the format given (-U: a running guest holds it)."""
    done = subprocess.run(
        ["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def seed_files(path: Path) -> dict[str, str]:
    """The seed ISO's volume label and its files, read back with pycdlib."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {"label": iso.pvd.volume_identifier.decode().strip()}
        for name in ("user-data", "meta-data"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()


def create(client: TestClient, host: dict, name: str, pool: str, image: dict, **fields) -> dict:
    """Create a 1 GiB guest from the image with cloud-init; the finished job."""
    key = fields.pop("key", ssh_key())
    cloud_init = {"user": "vd", "password": PASSWORD, "ssh_keys": [key], "user_data": USER_DATA}
    response = post_guest(
        client, host, name, disk={"pool": pool, "size_gib": 1}, image={"pool": pool, **image},
        cloud_init=cloud_init, network=None, **fields,
    )  # fmt: skip
    assert response.status_code == 202, response.text
    job = finished_job(client, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job
    return job


def cdroms(name: str) -> list[ET.Element]:
    domain = ET.fromstring(virsh("dumpxml", "--inactive", name))
    return domain.findall("devices/disk[@device='cdrom']")


def check_seed(name: str, pool: str, guest_uuid: str, key: str) -> None:
    """The guest's only CD-ROM is its seed, read-only raw, holding what was asked."""
    seed = IMAGES / pool / f"{name}-seed.iso"
    [cdrom] = cdroms(name)
    assert cdrom.find("source").get("file") == str(seed)
    assert cdrom.find("readonly") is not None
    assert cdrom.find("driver").get("type") == "raw"
    files = seed_files(seed)
    assert files["label"] == "CIDATA" or files["label"].lower() == "cidata"
    assert json.loads(files["meta-data"]) == {"instance-id": guest_uuid, "local-hostname": name}
    parts = [p.get_payload(decode=True).decode() for p in email.message_from_string(
        files["user-data"]).get_payload()]  # fmt: skip
    ours = json.loads(parts[0].removeprefix("#cloud-config\n"))
    [user] = ours["users"]
    assert (user["name"], user["ssh_authorized_keys"], user["lock_passwd"]) == ("vd", [key], False)
    assert user["passwd"].startswith("$6$")
    assert parts[1] == USER_DATA
    assert PASSWORD.encode() not in seed.read_bytes()


def test_an_overlay_guest_runs_on_the_base_image_with_its_seed_read_only(
    client: TestClient, local: dict, pool: str, made: list[str]
) -> None:
    base = make_image(pool, "base.qcow2")
    name, key = unique_name(), ssh_key()
    made.append(name)

    job = create(
        client, local, name, pool, {"volume": "base.qcow2", "mode": "overlay"}, key=key, start=True
    )

    disk = IMAGES / pool / f"{name}.qcow2"
    info = image_info(disk, "qcow2")
    assert info["virtual-size"] == GIB
    assert (info["backing-filename"], info["backing-filename-format"]) == (str(base), "qcow2")
    assert image_info(base, "qcow2")["virtual-size"] == 64 * 1024**2
    domain = ET.fromstring(virsh("dumpxml", "--inactive", name))
    chain = domain.find("devices/disk[@device='disk']/backingStore")
    assert (chain.find("source").get("file"), chain.find("format").get("type")) == (
        str(base), "qcow2",
    )  # fmt: skip
    check_seed(name, pool, job["result"]["guest_uuid"], key)
    assert virsh("domstate", name).strip() == "running"
    assert sorted(pool_volumes(pool)) == sorted(["base.qcow2", f"{name}.qcow2", f"{name}-seed.iso"])
    # Deleted with its storage, the guest takes its seed along and leaves the base image.
    uuid = job["result"]["guest_uuid"]
    deleted = client.delete(
        f"/api/v1/guests/{uuid}", params={"remove_storage": True, "force": True}
    )
    assert deleted.status_code == 200, deleted.text
    assert pool_volumes(pool) == ["base.qcow2"]


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_a_copy_of_the_base_image_is_grown_to_the_size_asked(
    client: TestClient, local: dict, pool: str, made: list[str], fmt: str
) -> None:
    base = make_image(pool, f"base.{fmt}", fmt=fmt)
    name, key = unique_name(), ssh_key()
    made.append(name)

    job = create(client, local, name, pool, {"volume": base.name, "format": fmt, "mode": "copy"},
                 key=key)  # fmt: skip

    disk = IMAGES / pool / (f"{name}.qcow2" if fmt == "qcow2" else f"{name}.img")
    info = image_info(disk, fmt)
    assert (info["virtual-size"], info["format"]) == (GIB, fmt)
    assert "backing-filename" not in info
    assert image_info(base, fmt)["virtual-size"] == 64 * 1024**2
    domain = ET.fromstring(virsh("dumpxml", "--inactive", name))
    source = domain.find("devices/disk[@device='disk']")
    assert (source.find("source").get("file"), source.find("driver").get("type")) == (
        str(disk), fmt,
    )  # fmt: skip
    check_seed(name, pool, job["result"]["guest_uuid"], key)


def test_a_base_image_with_a_backing_file_is_refused_and_nothing_is_made(
    client: TestClient, local: dict, pool: str
) -> None:
    base = make_image(pool, "base.qcow2")
    make_image(pool, "top.qcow2", backing=base)
    name = unique_name()
    before = pool_volumes(pool)

    response = post_guest(
        client, local, name, disk={"pool": pool, "size_gib": 1},
        image={"pool": pool, "volume": "top.qcow2", "mode": "copy"},
        cloud_init={"user": "vd", "ssh_keys": [ssh_key()]},
    )  # fmt: skip

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "image.volume"
    assert "backing file" in response.json()["detail"]
    assert pool_volumes(pool) == before
    assert name not in virsh_lines("list", "--all", "--name")


def test_a_create_that_fails_after_its_disk_and_seed_were_made_removes_both(
    pool: str, made: list[str]
) -> None:
    make_image(pool, "base.qcow2")
    name = unique_name()
    made.append(name)
    asked = CreateRequest(
        host_id=1, name=name, vcpus=1, memory_mib=64, disk=NewDisk(pool, 1),
        image=BaseImage(pool, "base.qcow2", "qcow2", "copy"),
        cloud_init=CloudInit(user="vd", ssh_keys=(ssh_key(),)),
    )  # fmt: skip
    conn = HostConnection(SYSTEM_URI, keepalive=(3, 3), on_close=lambda _reason: None)
    try:
        plan = check_on_host(conn, asked, 1)
        broken = replace(plan.guest.platform, emulator="/usr/bin/vdtest-no-such-emulator")
        plan = replace(
            plan,
            guest=replace(plan.guest, platform=broken),
            seed=seed(asked.cloud_init, guest_name=name, instance_id=plan.guest.uuid),
        )

        with pytest.raises(VirtdeckError, match="vdtest-no-such-emulator"):
            build_guest(conn, plan)
    finally:
        conn.close()

    assert pool_volumes(pool) == ["base.qcow2"]
    assert name not in virsh_lines("list", "--all", "--name")
