"""Consoles of a real KVM guest on a host registered as qemu+ssh:// (an sshd of the test's own on
loopback, key auth, in front of the same libvirtd): the screen goes through an SSH channel with
the host key checked, the serial line through libvirt's stream over SSH; a wrong host key is
refused with a plain reason, and a console whose host stops answering closes within the
keepalive time, saying why."""

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.browser import chromium, logged_in_tab
from tests.console_guest import ConsoleGuest, console_guest, wait_for_log
from tests.consoles import closed_with, open_console, run, serial_echo
from tests.serve import ADMIN_PASSWORD, Server, running_server
from tests.sshd import SshHost

pytestmark = [pytest.mark.libvirtd, pytest.mark.browser]
# Keepalive of 1 s, 2 missed: a silent host is dropped after about 3 s.
KEEPALIVE = {"VIRTDECK_KEEPALIVE_INTERVAL": "1", "VIRTDECK_KEEPALIVE_COUNT": "2"}


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGuest]:
    with console_guest(tmp_path_factory.mktemp("console-guest")) as running:
        yield running


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", **KEEPALIVE}
    with running_server(tmp_path_factory.mktemp("serve"), env) as running:
        yield running


def ticket(server: Server, guest: ConsoleGuest, kind: str) -> str:
    issued = server.api(
        "POST", f"/guests/{guest.uuid}/console/tickets", json={"kind": kind, "takeover": True}
    )
    assert issued.status_code == 201, issued.text
    return server.url.replace("http://", "ws://") + issued.json()["url"]


def test_an_operator_types_into_the_guest_on_an_ssh_host_in_the_browser(
    ssh: SshHost, server: Server, guest: ConsoleGuest
) -> None:
    server.add_host("over-ssh", ssh.uri())
    mark = f"ssh-key-{os.getpid()}"

    with chromium() as browser:
        tab = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD)
        screen = open_console(tab, server.url, guest.uuid, "vnc")
        # Pasted text is typed into the guest as key presses (Shift where it needs it).
        screen.locator("summary").click()
        screen.get_by_label("Text, typed as key presses").fill(f"echo {mark} >/dev/ttyS0\n")
        screen.get_by_role("button", name="Type it").click()
        wait_for_log(guest, mark, timeout=10)

    serial = ticket(server, guest, "serial")
    seen = serial_echo(serial, server.token, b"echo over-$((6*7))\r", re.compile("over-42"))
    assert "over-42" in seen
    audit = server.api("GET", "/audit", params={"action": "console.vnc.open"}).json()["items"]
    assert audit and audit[0]["result"] == "ok"


def test_a_wrong_host_key_refuses_the_screen_and_says_why(
    ssh: SshHost, server: Server, guest: ConsoleGuest
) -> None:
    server.add_host("wrong-key", ssh.uri(known_hosts=ssh.wrong_known_hosts))

    code, reason, _took = run(closed_with(ticket(server, guest, "vnc"), server.token, timeout=15))

    assert (code, reason) == (4409, "the SSH host key of 127.0.0.1 is unknown or changed: refused")


def _session_processes(ssh: SshHost) -> list[int]:
    """Every process below the test's sshd: its connections and what they run."""
    found, parents = [], [ssh.pid]
    while parents:
        children = subprocess.run(
            ["pgrep", "-P", ",".join(map(str, parents))],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        parents = [int(pid) for pid in children]
        found += parents
    return found


async def _page_times(server: Server, guest: ConsoleGuest) -> list[float]:
    """How long the guest list and the guest page take, five times each."""
    times = []
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(headers=headers) as client:
        for _ in range(5):
            for path in ("/api/v1/guests", f"/api/v1/guests/{guest.uuid}"):
                started = time.monotonic()
                assert (await client.get(server.url + path)).status_code == 200
                times.append(time.monotonic() - started)
            await asyncio.sleep(0.2)
    return times


def test_a_console_whose_host_stops_answering_closes_within_the_keepalive_time(
    ssh: SshHost, server: Server, guest: ConsoleGuest
) -> None:
    server.add_host("stalls", ssh.uri())

    async def stall() -> list:
        screen = asyncio.create_task(closed_with(ticket(server, guest, "vnc"), server.token, 30))
        serial = asyncio.create_task(closed_with(ticket(server, guest, "serial"), server.token, 30))
        await asyncio.sleep(2)  # both open
        stalled = _session_processes(ssh)
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            pages = await _page_times(server, guest)  # while the host is silent
            results = await asyncio.gather(screen, serial)
            return [*results, time.monotonic() - started, pages]
        finally:
            for pid in stalled:
                os.kill(pid, signal.SIGCONT)

    screen, serial, took, pages = run(stall())

    # Keepalive of 1 s with 2 missed, and the serial console's look at its connection every 2 s.
    assert took < 8, (screen, serial, took)
    assert screen[:2] == (
        4503,
        "the guest's screen was lost (SSH to 127.0.0.1): Server not responding to keepalive",
    )
    assert serial[:2] == (4503, "the host stopped answering (libvirt's keepalive)")
    assert max(pages) < 1.0, pages  # other users' pages did not wait for the silent host
