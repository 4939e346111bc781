"""What the console is for, end to end: an operator creates a guest from an installer ISO with
virtdeck, opens its screen in the browser and types at the installer's boot prompt, on a local
host and on a qemu+ssh host. The ISO (tests/install_iso.py) powers the guest off when `off` is
typed there, so the keys are seen to arrive by the guest's state, as virtdeck shows it.

Where /dev/kvm is nested KVM without the CPU's extensions (kvm_pvm), QEMU pauses the guest at
isolinux's first instructions (a KVM internal error); there the test has the new guest emulated
(type qemu) before it starts it, as tests/console_guest.py does for its guests."""

import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import chromium, logged_in_tab
from tests.console_guest import domain_type
from tests.consoles import open_console, wait_for_screen
from tests.install_iso import build_install_iso
from tests.libvirtd import IMAGES, SYSTEM_URI, virsh
from tests.polling import finished_job
from tests.serve import Server, running_server
from tests.sshd import sshd_for_libvirt
from tests.storage import remove_guest, throwaway_pool, unique_name

pytestmark = [pytest.mark.libvirtd, pytest.mark.browser]
OPERATOR_PASSWORD = "operator password for tests"


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[str]:
    """A dir pool holding the installer ISO as install.iso."""
    with throwaway_pool() as name:
        build_install_iso(IMAGES / name / "install.iso", tmp_path)
        virsh("pool-refresh", name)
        yield name


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"VIRTDECK_DEFAULT_HOST_URI": ""}
    with running_server(tmp_path_factory.mktemp("serve"), env) as running:
        created = running.api(
            "POST", "/users", json={"name": "op", "password": OPERATOR_PASSWORD, "role": "operator"}
        )
        assert created.status_code == 201, created.text
        yield running


@pytest.fixture(params=["local", "ssh"])
def host_uri(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    if request.param == "local":
        yield SYSTEM_URI
        return
    with sshd_for_libvirt(tmp_path_factory.mktemp("sshd")) as ssh:
        yield ssh.uri()


def emulate(name: str) -> None:
    """Redefine the (shut-off) guest as emulated by QEMU, with its default CPU."""
    domain = ET.fromstring(virsh("dumpxml", "--inactive", name))
    domain.set("type", "qemu")
    for cpu in domain.findall("cpu"):
        domain.remove(cpu)
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as xml:
        xml.write(ET.tostring(domain, encoding="unicode"))
        xml.flush()
        virsh("define", xml.name)


def guest_state(server: Server, uuid: str) -> str:
    return server.api("GET", f"/guests/{uuid}").json()["state"]


def test_an_operator_creates_a_guest_from_an_iso_and_types_into_its_installer(
    server: Server, pool: str, host_uri: str
) -> None:
    host_id = server.add_host("lab", host_uri)
    name = unique_name()
    body = {
        "host_id": host_id, "name": name, "vcpus": 1, "memory_mib": 128,
        "cdrom": {"pool": pool, "volume": "install.iso"},
    }  # fmt: skip
    try:
        created = server.api("POST", "/guests", json=body)
        assert created.status_code in (201, 202), created.text
        job = created.json()
        uuid = job.get("guest_uuid") or job["uuid"]
        if created.status_code == 202:
            assert finished_job(server, job["id"], timeout=60)["status"] == "succeeded"
        if domain_type() == "qemu":
            emulate(name)
        started = server.api("POST", f"/guests/{uuid}/actions/start")
        assert started.status_code == 200, started.text
        assert guest_state(server, uuid) == "running"

        with chromium() as browser:
            tab = logged_in_tab(browser, server, "op", OPERATOR_PASSWORD)
            tab.set_default_timeout(15_000)
            screen = open_console(tab, server.url, uuid, "vnc")
            wait_for_screen(tab)  # the boot prompt
            tab.locator("[data-console=vnc] canvas").click()
            tab.keyboard.type("off")
            tab.keyboard.press("Enter")

            # The guest powers off; the screen's state line says it is not running.
            expect(screen).to_have_attribute("data-state", "not-running", timeout=30_000)
        deadline = time.monotonic() + 15
        while guest_state(server, uuid) != "shutoff":
            assert time.monotonic() < deadline, guest_state(server, uuid)
            time.sleep(0.3)
    finally:
        remove_guest(name)
