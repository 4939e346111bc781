"""Reach a running guest's VNC server from this process, whatever its host's URI: a socket the
local libvirtd hands over (no TCP port at all), a direct-tcpip channel over SSH
(app.services.console_ssh), or, for qemu+tcp/tls where libvirt has no tunnel,
TCP to the host's console address when one is set. All of it is asyncio: nothing blocks the web
process's event loop (libvirt calls run in HostCalls' threads)."""

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from app.config import Settings
from app.errors import ConsoleUnavailable, HostUnreachable, VirtdeckError
from app.services.ports import HostCalls
from app.virt.consoles import graphics_socket_fd, guest_is_live, vnc_listen
from app.virt.failures import one_line
from app.virt.types import VncListen
from app.virt.uri import ssh_target, transport

CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
# How long a console that ended waits for libvirt to see its guest stopped.
STOP_SETTLE_S = 5.0


class Reader(Protocol):
    """The reading side of a link (asyncio's StreamReader or asyncssh's SSHReader)."""

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b'' at the end."""


class Writer(Protocol):
    """The writing side of a link."""

    def write(self, data: bytes) -> None:
        """Queue data."""

    async def drain(self) -> None:
        """Wait until the queue is below its limit."""

    def close(self) -> None:
        """Close this side."""


@dataclass
class Link:
    """An open byte stream to a guest's VNC server, and how it was reached."""

    reader: Reader
    writer: Writer
    via: str
    close_more: Callable[[], Awaitable[None]] | None = None
    # What a read or write raises when the link is lost (an SSH link adds asyncssh's errors).
    errors: ClassVar[tuple[type[Exception], ...]] = (OSError,)

    async def recv(self) -> bytes:
        """What the VNC server sent next; b'' at the end."""
        try:
            return await self.reader.read(READ_SIZE)
        except self.errors as exc:
            raise self._lost(exc) from exc

    async def send(self, data: bytes) -> None:
        """Send to the VNC server, waiting while its side is full."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except self.errors as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: Exception) -> HostUnreachable:
        reason = one_line(str(exc), 200)  # an asyncssh error's text is its reason
        return HostUnreachable(f"the guest's screen was lost ({self.via}): {reason or 'no reason'}")

    async def lost(self) -> str | None:
        """Nothing to ask: a lost link ends its reads (keepalive of SSH or TCP)."""
        return None

    async def close(self) -> None:
        """Close the stream and what carries it."""
        self.writer.close()
        if self.close_more is not None:
            await self.close_more()


@dataclass(frozen=True)
class HostRoute:
    """What this module needs to know of a host."""

    host_id: int
    uri: str
    console_address: str | None


def screen_route(uri: str, console_address: str | None) -> tuple[str, bool]:
    """How the host's guests' screens are reached, in words, and whether a console address
    applies to it (qemu+tcp/tls: there is no other way)."""
    how = transport(uri)
    if how == "local":
        return "handed over by the local libvirtd (no TCP port)", False
    if how == "ssh":
        return f"through SSH to {ssh_target(uri).host}, its host key checked", False
    if console_address:
        return f"by TCP to the console address {console_address}", True
    return f"none: libvirt has no screen tunnel over {how}; set a console address", True


async def _call(calls: HostCalls, host_id: int, fn):
    return await asyncio.to_thread(calls.call, host_id, fn)


async def open_vnc(calls: HostCalls, host: HostRoute, guest_uuid: str, settings: Settings) -> Link:
    """A link to the guest's VNC server; ConsoleUnavailable (saying what to configure),
    GuestNotRunning or HostUnreachable when there is none. Whatever was opened on the way is
    closed again when a later step fails or the caller gives up."""
    how = transport(host.uri)
    if how == "local":
        return await _handed_over(calls, host.host_id, guest_uuid)
    listen = await _call(calls, host.host_id, lambda conn: vnc_listen(conn, guest_uuid))
    if listen.socket:
        raise ConsoleUnavailable(
            "the guest's VNC server listens on a UNIX socket, which only a local libvirtd "
            "hands over"
        )
    if how == "ssh":
        # Imported by the first screen of a qemu+ssh host: asyncssh and cryptography would
        # otherwise hold about 15 MiB of every web process's memory.
        from app.services.console_ssh import over_ssh

        return await over_ssh(host.uri, listen, settings)
    return await _direct(host, listen, settings, how)


async def _handed_over(calls: HostCalls, host_id: int, guest_uuid: str) -> Link:
    opening = asyncio.ensure_future(
        _call(calls, host_id, lambda conn: graphics_socket_fd(conn, guest_uuid))
    )
    try:
        fd = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The socket may still arrive from its thread: close it then.
        opening.add_done_callback(_close_late)
        raise
    sock = socket.socket(fileno=fd)
    try:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    return Link(reader, writer, via="the local libvirtd")


def _close_late(opening: asyncio.Future) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


async def guest_stopped(
    calls: HostCalls, host_id: int, guest_uuid: str, *, settle: float = STOP_SETTLE_S
) -> bool:
    """Whether the guest has stopped (when its console ended: because QEMU did?). QEMU closes
    the screen as it exits, a moment before libvirt has seen it go (longer on a busy host), so
    a guest that still looks live is asked again for up to `settle` seconds."""
    deadline = asyncio.get_running_loop().time() + settle
    while True:
        try:
            live = await _call(calls, host_id, lambda conn: guest_is_live(conn, guest_uuid))
        except VirtdeckError:  # the host is gone: the console's own reason says so
            return False
        if not live:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def _direct(host: HostRoute, listen: VncListen, settings: Settings, how: str) -> Link:
    """TCP to the host's console address (set by an admin) at the guest's VNC port: the address
    never comes from the guest's XML."""
    assert listen.address is not None and listen.port is not None
    if not host.console_address:
        raise ConsoleUnavailable(
            f"libvirt has no screen tunnel over {how}: use qemu+ssh://, or set the host's "
            "console address"
        )
    if ipaddress.ip_address(listen.address).is_loopback:
        raise ConsoleUnavailable(
            f"the guest's VNC server listens on its host's {listen.address} only: "
            f"unreachable over {how} (use qemu+ssh://)"
        )
    address = host.console_address
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, listen.port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise HostUnreachable(
            f"cannot reach the VNC server at {address}:{listen.port}: "
            f"{one_line(str(exc) or 'timed out', 60)}"
        ) from exc
    _keep_alive(writer.get_extra_info("socket"), settings)
    return Link(reader, writer, via=f"TCP to {address}:{listen.port}")


def _keep_alive(sock: socket.socket | None, settings: Settings) -> None:
    """TCP keepalive at libvirt's pace: a host gone silent ends the console as soon."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.keepalive_interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.keepalive_count)
