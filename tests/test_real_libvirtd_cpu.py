"""The CPU new guests get on the real libvirtd: probed per host, shown, chosen, and starts that
fail said in plain words. Which answer the probe gives depends on the machine (nested KVM on AMD
refuses arch-capabilities; Intel does not), so these tests hold on either."""

import json
import re
import time
import xml.etree.ElementTree as ET
from functools import partial

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from app.virt import cpu as cpus
from app.virt.build import host_platform
from app.virt.connection import CPU_PROBE_PREFIX, HostConnection
from tests.conftest import add_host, post_guest
from tests.htmx import HTMX, htmx_to
from tests.libvirtd import SYSTEM_URI, virsh
from tests.markup import parse
from tests.storage import remove_guest, throwaway_pool, unique_name, virsh_lines

pytestmark = pytest.mark.libvirtd
# Small guests: these tests start them on the real host.
create = partial(post_guest, memory_mib=64)


def probed(client: TestClient, host: dict, timeout: float = 60) -> dict:
    """The host's CPU probe once its worker has stored it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get(f"/api/v1/hosts/{host['id']}").json()["cpu_probe"]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the host's CPU was not probed in time")


def cpu_of(name: str) -> ET.Element | None:
    """The <cpu> element of a guest's persistent definition (None when it has none)."""
    return ET.fromstring(virsh("dumpxml", "--inactive", name)).find("cpu")


def disabled(cpu: ET.Element) -> set[str]:
    return {f.get("name") for f in cpu.findall("feature[@policy='disable']")}


def test_the_host_page_says_which_cpu_new_guests_get_and_such_a_guest_runs(
    client: TestClient, local: dict, made: list[str]
) -> None:
    probe = probed(client, local)
    name = unique_name()
    made.append(name)

    response = create(client, local, name, start=True)

    assert response.status_code == 201, response.text
    assert virsh("domstate", name).strip() == "running"
    cpu = cpu_of(name)
    if probe["mode"] == "default":
        assert cpu is None or cpu.get("mode") == "custom"
    else:
        assert (cpu.get("mode"), disabled(cpu)) == (probe["mode"], set(probe["disabled"]))
    # A choice other than the host's own CPU is explained by what QEMU refused (on machines
    # where QEMU refuses nothing, the reason says so).
    if probe["disabled"] or probe["mode"] != "host-passthrough":
        assert probe["reason"].startswith(probe["label"])
        assert ", because QEMU refused host-passthrough: " in probe["reason"]
    else:
        assert probe["reason"] == f"QEMU starts guests with {probe['label']} on this host"
    page = client.get(f"/hosts/{local['id']}").text
    assert "CPU mode for new guests" in page
    assert str(escape(probe["reason"])) in page
    # The probe's transient guests are gone and were never in the inventory.
    assert not [n for n in virsh_lines("list", "--all", "--name") if n.startswith(CPU_PROBE_PREFIX)]
    listed = client.get("/api/v1/guests", params={"q": CPU_PROBE_PREFIX, "state": "gone"})
    assert listed.json()["items"] == []


@pytest.mark.parametrize("mode", ["host-passthrough", "host-model", "default"])
def test_a_cpu_mode_asked_for_is_what_the_guest_gets_and_it_runs(
    client: TestClient, local: dict, made: list[str], mode: str
) -> None:
    probe = probed(client, local)
    name = unique_name()
    made.append(name)

    response = create(client, local, name, cpu_mode=mode, start=True)

    assert response.status_code == 201, response.text
    assert virsh("domstate", name).strip() == "running"
    cpu = cpu_of(name)
    if mode == "default":  # libvirt writes down the hypervisor's model once it has run
        assert cpu is None or (cpu.get("mode"), disabled(cpu)) == ("custom", set()), cpu.attrib
        return
    # What this host cannot give a guest stays off whatever mode is asked for.
    assert (cpu.get("mode"), disabled(cpu)) == (mode, set(probe["disabled"]))


def test_a_cpu_model_the_host_cannot_run_is_refused_naming_the_field(
    client: TestClient, local: dict
) -> None:
    name = unique_name()

    response = create(client, local, name, cpu_mode="custom", cpu_model="vdtest-no-such-model")

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "cpu_model"
    assert response.json()["detail"].startswith("cpu_model: 'vdtest-no-such-model' is not")
    assert name not in virsh_lines("list", "--all", "--name")


def test_the_probe_moves_past_a_cpu_that_is_refused_and_says_why() -> None:
    conn = HostConnection(SYSTEM_URI, keepalive=(3, 3), on_close=lambda _reason: None)
    try:
        platform = host_platform(conn)
        assert platform.domain_type == "kvm", "this machine should offer KVM"
        refused = cpus.CpuConfig("host-passthrough", disabled=("vdtest-no-such-feature",))

        probe = cpus.first_that_starts(
            conn, platform, candidates=[refused, cpus.CpuConfig("default")]
        )
    finally:
        conn.close()

    assert probe.config == cpus.CpuConfig("default")
    assert probe.reason.startswith(
        "the hypervisor's default CPU, because QEMU refused "
        "host-passthrough without vdtest-no-such-feature: "
    )
    assert "vdtest-no-such-feature" in probe.reason.partition(": ")[2]


def test_a_guest_that_cannot_start_says_why_in_plain_words_in_the_api_and_on_the_page(
    client: TestClient, local: dict, made: list[str]
) -> None:
    name = unique_name()
    made.append(name)
    with throwaway_pool() as pool:
        virsh("vol-create-as", pool, f"{name}.qcow2", "16M", "--format", "qcow2")
        created = create(
            client, local, name, disk={"pool": pool, "volume": f"{name}.qcow2", "format": "qcow2"}
        )
        assert created.status_code == 201, created.text
        uuid = created.json()["uuid"]
        virsh("vol-delete", f"{name}.qcow2", "--pool", pool)

        answer = client.post(f"/api/v1/guests/{uuid}/actions/start")
        toast = client.post(f"/guests/{uuid}/actions/start", headers=htmx_to("guest-status"))
        overview = parse(client.get(f"/guests/{uuid}").text)
        cleared = client.post(f"/api/v1/guests/{uuid}/actions/autostart_on")
        after = parse(client.get(f"/guests/{uuid}").text)
        remove_guest(name)

    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["detail"].startswith(f"{name} could not start: libvirt says: ")
    assert f"{name}.qcow2" in body["detail"] and f"{name}.qcow2" in body["libvirt_error"]
    assert toast.status_code == 409 and toast.headers["HX-Retarget"] == "#toasts"
    assert f"{name} could not start: libvirt says: " in toast.text
    assert json.dumps(body["detail"])  # one line of text, no raw traceback
    assert "Traceback" not in toast.text
    # The Overview keeps the failure, in plain words first, until an action succeeds.
    failure = overview.find("section", class_="failure")
    assert failure.find("strong").text == f"{name} did not start."
    assert failure.find("p", class_="hint").text.startswith("A disk's file is missing")
    assert f"{name}.qcow2" in failure.find("span", class_="more-rest").text
    assert cleared.status_code == 200, cleared.text
    assert after.find(id="guest-failure").text == ""


def test_the_wizard_preselects_the_hosts_working_cpu_and_creates_with_the_one_chosen(
    client: TestClient, local: dict, made: list[str]
) -> None:
    probe = probed(client, local)
    name = unique_name()
    made.append(name)

    choices = client.get("/guests/new/choices", params={"host_id": local["id"]}).text
    select = choices.split('name="cpu"', 1)[1].split("</select>", 1)[0]
    created = client.post(
        "/guests/new",
        data={
            "host_id": str(local["id"]),
            "name": name,
            "vcpus": "1",
            "memory_mib": "64",
            "disk": "none",
            "firmware": "bios",
            "cpu": "host-model",
        },
        headers=HTMX,
    )

    first = re.search(r'<option value="([^"]*)" selected>([^<]*)<', select)
    assert first.groups() == ("", f"{probe['label']} (this host's working choice)")
    assert re.findall(r'<option value="(host-[a-z-]+|default)"', select) == [
        "host-passthrough", "host-model", "default"
    ]  # fmt: skip
    assert str(escape(probe["reason"])) in choices
    assert created.status_code == 204, created.text
    assert created.headers["HX-Redirect"].startswith("/guests/")
    cpu = cpu_of(name)
    assert (cpu.get("mode"), disabled(cpu)) == ("host-model", set(probe["disabled"]))


def test_the_wizard_never_starts_qemu_itself_and_names_the_probe_once_the_host_has_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpus, "_cache", {})  # as in a process that has not probed this host
    host = add_host(client, "local", SYSTEM_URI)

    # The worker's probe starts QEMU for about 2 s a try; the form does not wait for it.
    before = client.get("/guests/new/choices", params={"host_id": host["id"]}).text
    probe = probed(client, host)
    after = client.get("/guests/new/choices", params={"host_id": host["id"]}).text

    assert "has not been probed yet" in before
    assert f"{probe['label']} (this host's working choice)" in after


def test_a_guest_may_not_take_the_name_of_virtdecks_probe_guests(
    client: TestClient, local: dict
) -> None:
    response = create(client, local, f"{CPU_PROBE_PREFIX}x")

    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"name: names starting with {CPU_PROBE_PREFIX}")


def test_a_host_dropped_while_its_cpu_is_probed_leaves_the_probe_to_finish_on_its_own(
    make_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpus, "_cache", {})  # so that the worker must start QEMU to know
    client = make_client()
    host = add_host(client, "local", SYSTEM_URI)

    # The worker drops its connection (the host is forgotten) while the probe starts QEMU; the
    # probe, on a connection of its own, finishes and leaves nothing behind. (On the worker's
    # connection this crashed the process: libvirt-python on a closed connection.)
    assert client.delete(f"/api/v1/hosts/{host['id']}").status_code == 204
    deadline = time.monotonic() + 30
    while [n for n in virsh_lines("list", "--all", "--name") if n.startswith(CPU_PROBE_PREFIX)]:
        assert time.monotonic() < deadline, "a probe guest outlived its probe"
        time.sleep(0.2)
    again = add_host(client, "local again", SYSTEM_URI)

    assert probed(client, again)["label"]
