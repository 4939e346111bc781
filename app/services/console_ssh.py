"""A guest's screen on a qemu+ssh host: a direct-tcpip channel over SSH (the URI's user, key
and known_hosts, host keys checked) to the VNC server on the host's loopback. Imported only for
such a screen: asyncssh and cryptography would otherwise hold about 15 MiB of every process."""

import asyncio
import ipaddress
from typing import ClassVar

import asyncssh

from app.config import Settings
from app.errors import ConsoleUnavailable, HostUnreachable
from app.services.console_links import CONNECT_TIMEOUT, Link
from app.services.ssh_hosts import ssh_connection
from app.virt.failures import one_line
from app.virt.types import VncListen
from app.virt.uri import ssh_target


class SshLink(Link):
    """A link through an SSH channel: asyncssh's errors lose it too."""

    errors: ClassVar[tuple[type[Exception], ...]] = (asyncssh.Error, OSError)


def loopback_for(address: str) -> str:
    """Where, on the host itself, a server listening on `address` is reached."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return address


async def over_ssh(uri: str, listen: VncListen, settings: Settings) -> Link:
    """A link to the VNC server at `listen` on the host, through SSH."""
    assert listen.address is not None and listen.port is not None
    connection = await ssh_connection(uri, settings, refused=ConsoleUnavailable)
    address = loopback_for(listen.address)
    try:
        reader, writer = await asyncio.wait_for(
            connection.open_connection(address, listen.port), CONNECT_TIMEOUT
        )
    except BaseException as exc:
        connection.close()
        if isinstance(exc, asyncssh.ChannelOpenError):
            raise ConsoleUnavailable(
                f"SSH would not reach the VNC server at {address}:{listen.port}: "
                f"{one_line(exc.reason, 60)}"
            ) from exc
        if isinstance(exc, (OSError, TimeoutError, asyncssh.Error)):
            raise HostUnreachable(f"the SSH channel to the screen failed: {exc}") from exc
        raise

    async def close_connection() -> None:
        connection.close()
        await connection.wait_closed()

    host = ssh_target(uri).host
    return SshLink(reader, writer, via=f"SSH to {host}", close_more=close_connection)
