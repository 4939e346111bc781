"""Deleting guests on the real libvirtd: undefine with snapshots, volumes removed or kept."""

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.virt.teardown import NOT_A_VOLUME
from tests.conftest import add_host
from tests.libvirtd import IMAGES, SYSTEM_URI, domain_xml, virsh
from tests.storage import pool_volumes, throwaway_pool, unique_name

pytestmark = pytest.mark.libvirtd


def create_volume(pool: str, name: str) -> Path:
    """A new 16 MiB qcow2 volume in the pool; its path."""
    virsh("vol-create-as", pool, name, "16M", "--format", "qcow2")
    return IMAGES / pool / name


@contextmanager
def defined_guest(
    tmp_path: Path, disk: Path, *, xml: Callable[[str, str, Path], str] = domain_xml
) -> Iterator[tuple[str, str]]:
    """A shut-off guest on this disk; (name, uuid). Removed afterwards if a test left it."""
    name, guest_uuid = unique_name(), str(uuid.uuid4())
    xml_file = tmp_path / f"{name}.xml"
    xml_file.write_text(xml(name, guest_uuid, disk))
    virsh("define", str(xml_file))
    try:
        yield name, guest_uuid
    finally:
        virsh("destroy", guest_uuid, check=False)
        virsh("undefine", guest_uuid, "--snapshots-metadata", "--checkpoints-metadata", "--nvram",
              check=False)  # fmt: skip


def defined_names() -> set[str]:
    """Every domain name on the host, running or not."""
    return set(virsh("list", "--all", "--name").split())


def synced_host(client: TestClient) -> dict:
    """qemu:///system registered in virtdeck and synced."""
    return add_host(client, "local", SYSTEM_URI)


def delete(client: TestClient, guest_uuid: str, **params: bool):
    """DELETE the guest through the API with these query flags."""
    return client.delete(f"/api/v1/guests/{guest_uuid}", params=params)


def test_delete_with_storage_undefines_with_snapshots_and_removes_the_volume(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, ExitStack() as stack:
        disk = create_volume(pool, "disk.qcow2")
        name, guest_uuid = stack.enter_context(defined_guest(tmp_path, disk))
        virsh("snapshot-create-as", guest_uuid, "vdtest-before")
        synced_host(client)

        response = delete(client, guest_uuid, remove_storage=True)

        assert response.status_code == 200, response.text
        assert response.json() == {
            "uuid": guest_uuid,
            "name": name,
            "removed_volumes": [str(disk)],
            "kept_volumes": [],
        }
        assert name not in defined_names()
        assert pool_volumes(pool) == []
        assert not disk.exists()
        assert client.get(f"/api/v1/guests/{guest_uuid}").json()["status"] == "gone"


def test_a_volume_another_guest_uses_is_kept_and_that_guest_untouched(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, ExitStack() as stack:
        disk = create_volume(pool, "shared.qcow2")
        first, first_uuid = stack.enter_context(defined_guest(tmp_path, disk))
        second, second_uuid = stack.enter_context(defined_guest(tmp_path, disk))
        synced_host(client)

        response = delete(client, first_uuid, remove_storage=True)

        assert response.status_code == 200, response.text
        assert response.json()["removed_volumes"] == []
        assert response.json()["kept_volumes"] == [
            {"path": str(disk), "reason": f"also used by guest {second}"}
        ]
        assert first not in defined_names()
        assert virsh("domstate", second_uuid).strip() == "shut off"
        assert pool_volumes(pool) == ["shared.qcow2"]
        assert client.get(f"/api/v1/guests/{second_uuid}").json()["status"] == "shutoff"


def test_a_running_guest_is_refused_without_force_and_deleted_with_it(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, ExitStack() as stack:
        disk = create_volume(pool, "disk.qcow2")
        name, guest_uuid = stack.enter_context(defined_guest(tmp_path, disk))
        virsh("start", guest_uuid)
        synced_host(client)

        refused = delete(client, guest_uuid, remove_storage=True)
        state_after_refusal = virsh("domstate", guest_uuid).strip()
        forced = delete(client, guest_uuid, remove_storage=True, force=True)

        assert refused.status_code == 409
        assert refused.json()["state"] == "running"
        assert state_after_refusal == "running"
        assert forced.status_code == 200, forced.text
        assert forced.json()["removed_volumes"] == [str(disk)]
        assert name not in defined_names()


def test_files_libvirt_did_not_make_are_found_in_their_pool_or_kept_outside_any(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, ExitStack() as stack:
        in_pool = IMAGES / pool / "copied-in.qcow2"  # made behind libvirt's back: not listed yet
        outside = tmp_path / "loose.qcow2"
        for path in (in_pool, outside):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True
            )
        _name, first_uuid = stack.enter_context(defined_guest(tmp_path, in_pool))
        _name, second_uuid = stack.enter_context(defined_guest(tmp_path, outside))
        synced_host(client)

        first = delete(client, first_uuid, remove_storage=True)
        second = delete(client, second_uuid, remove_storage=True)

        assert first.json()["removed_volumes"] == [str(in_pool)]
        assert not in_pool.exists()
        assert second.json()["kept_volumes"] == [{"path": str(outside), "reason": NOT_A_VOLUME}]
        assert outside.exists()


def uefi_xml(name: str, guest_uuid: str, disk: Path) -> str:
    """domain_xml booting from UEFI firmware, so that libvirt gives it an NVRAM file."""
    root = ET.fromstring(domain_xml(name, guest_uuid, disk))
    root.find("os").set("firmware", "efi")
    ET.SubElement(ET.SubElement(root, "features"), "acpi")  # UEFI needs ACPI on x86
    return ET.tostring(root, encoding="unicode")


@pytest.mark.skipif(not Path("/usr/share/OVMF").exists(), reason="no UEFI firmware (ovmf)")
def test_a_uefi_guest_is_deleted_with_its_nvram(client: TestClient, tmp_path: Path) -> None:
    with throwaway_pool() as pool, ExitStack() as stack:
        disk = create_volume(pool, "disk.qcow2")
        name, guest_uuid = stack.enter_context(defined_guest(tmp_path, disk, xml=uefi_xml))
        virsh("start", guest_uuid)  # libvirt makes the NVRAM file on the first start
        nvram = Path(ET.fromstring(virsh("dumpxml", guest_uuid)).findtext("os/nvram"))
        assert nvram.exists()
        synced_host(client)

        response = delete(client, guest_uuid, force=True)

        assert response.status_code == 200, response.text
        assert name not in defined_names()
        assert not nvram.exists()
