"""How virtdeck reaches a guest's screen, by the host's URI, on the real libvirtd: a local host
hands over a socket to the VNC server; a qemu+tcp/tls host (libvirt has no tunnel there) says
in plain words what is missing; a shut-off guest has no screen."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import Conflict, ConsoleUnavailable
from app.services.console_links import HostRoute, open_vnc
from app.virt.connection import HostConnection
from app.workers.calls import HostLink
from tests.libvirtd import SYSTEM_URI, ThrowawayGuest, throwaway_guest, virsh

pytestmark = pytest.mark.libvirtd
SETTINGS = Settings(database_url="sqlite://", default_host_uri="")


@pytest.fixture
def calls() -> Iterator[HostLink]:
    """Calls on one real connection to the local libvirtd, whatever host id is asked."""
    conn = HostConnection(SYSTEM_URI, keepalive=(3, 3), on_close=lambda _reason: None)
    yield HostLink(sessions=None, settings=SETTINGS, local=lambda _host_id: conn)  # type: ignore[arg-type]
    conn.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ThrowawayGuest]:
    with throwaway_guest(tmp_path) as guest:
        virsh("start", guest.uuid)
        yield guest


def reach(calls: HostLink, uri: str, uuid: str, console_address: str | None = None):
    return asyncio.run(open_vnc(calls, HostRoute(1, uri, console_address), uuid, SETTINGS))


def test_a_local_host_hands_over_the_screen_without_a_tcp_port(
    calls: HostLink, running: ThrowawayGuest
) -> None:
    async def banner() -> tuple[bytes, str]:
        link = await open_vnc(calls, HostRoute(1, SYSTEM_URI, None), running.uuid, SETTINGS)
        try:
            return await asyncio.wait_for(link.recv(), 10), link.via
        finally:
            await link.close()

    first, via = asyncio.run(banner())

    assert first == b"RFB 003.008\n" and via == "the local libvirtd"


def test_a_tcp_host_without_a_console_address_says_what_to_configure(
    calls: HostLink, running: ThrowawayGuest
) -> None:
    with pytest.raises(ConsoleUnavailable) as refused:
        reach(calls, "qemu+tcp://127.0.0.1/system", running.uuid)

    assert refused.value.message == (
        "libvirt has no screen tunnel over tcp: use qemu+ssh://, or set the host's console address"
    )


def test_a_tcp_host_cannot_reach_a_guest_that_listens_on_its_loopback_only(
    calls: HostLink, running: ThrowawayGuest
) -> None:
    with pytest.raises(ConsoleUnavailable) as refused:
        reach(calls, "qemu+tls://127.0.0.1/system", running.uuid, console_address="127.0.0.1")

    assert refused.value.message == (
        "the guest's VNC server listens on its host's 127.0.0.1 only: unreachable over tls "
        "(use qemu+ssh://)"
    )


def test_a_shut_off_guest_has_no_screen(calls: HostLink, tmp_path: Path) -> None:
    with throwaway_guest(tmp_path) as guest, pytest.raises(Conflict) as refused:
        reach(calls, SYSTEM_URI, guest.uuid)

    assert "not running" in refused.value.message
