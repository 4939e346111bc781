"""A running guest's pull-mode NBD export on a qemu+ssh host, read from this machine: the export's
socket (and libvirt's scratch files) go in a new directory made on the host over SSH, private to
QEMU's user there, and the socket is forwarded to a local unix socket through the same SSH
connection, so the disks are read as a local host's are: one copy, only the allocated
extents, no NBD port opened on the host. Other remote transports (qemu+tcp, qemu+tls) have no such
tunnel: there a push-mode job and libvirt streams copy the disks (app.services.backups.backup_job).

Making the directory needs root on the host (QEMU's user must own it): a qemu+ssh URI with another
login is backed up with a push-mode job instead.
"""

import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import replace

from app.config import Settings
from app.errors import VirtdeckError
from app.services.idle_pool import IdlePool
from app.services.ssh_hosts import SshSession
from app.virt.nbd_exports import NbdExport

TEMPLATE = "/tmp/virtdeck-nbd-XXXXXXXXXX"
# What mktemp prints for TEMPLATE; anything else is not removed with rm -rf.
MADE = re.compile(r"^/tmp/virtdeck-nbd-[A-Za-z0-9]{10}$")
# A DAC label as libvirt writes it ("+64055:+64055", or names), which chown takes as it is.
OWNER = re.compile(r"^\+?[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}:\+?[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

# Begins the pull-mode job with its socket in the directory the given maker makes (nbd_exports
# with the job's own arguments bound); yields {target: export}.
BeginExports = Callable[..., AbstractContextManager[dict[str, NbdExport]]]


@contextmanager
def remote_socket_directory(session: SshSession, owner: str | None) -> Iterator[str]:
    """A new directory on the session's host, private to QEMU's user (owner: its DAC label);
    removed afterwards with whatever QEMU or libvirt left in it. One shell on the host makes it,
    says its path, waits for the end of its input and removes it: one SSH channel for both (each
    costs a session on the host), and if virtdeck dies the closed connection ends it too."""
    if owner and not OWNER.match(owner):
        raise VirtdeckError(f"QEMU's user on {session.host} is not user:group: {owner!r}")
    chown = f' && chown -- {shlex.quote(owner)} "$d"' if owner else ""
    script = (
        f"d=$(mktemp -d {TEMPLATE}) || exit 1; "
        f'{{ true{chown}; }} || {{ rm -rf -- "$d"; exit 1; }}; '
        'echo "$d"; cat >/dev/null; rm -rf -- "$d"'
    )
    with session.holding(script) as made:
        if not MADE.match(made):
            raise VirtdeckError(f"mktemp on {session.host} made an unexpected path: {made[:80]!r}")
        yield made


class _HostSession:
    """An SSH session to a qemu+ssh host and the socket directories it holds there, one per
    QEMU user, which the next backup of the host can use again (app.services.idle_pool): each
    job's exports are gone from the directory when it ends (libvirt removes the scratch files,
    QEMU replaces a socket left behind), and one job at a time has the session."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.ssh = SshSession(uri, settings)
        self._held = ExitStack()
        self._made: dict[str | None, str] = {}

    def directory(self, owner: str | None) -> AbstractContextManager[str]:
        """The directory for QEMU's user owner (a SocketDirectory), made the first time."""
        if owner not in self._made:
            self._made[owner] = self._held.enter_context(remote_socket_directory(self.ssh, owner))
        return nullcontext(self._made[owner])

    def usable(self) -> bool:
        """Whether its connection is still open."""
        return self.ssh.alive()

    def close(self) -> None:
        """Remove its directories on the host, close the connection."""
        try:
            self._held.close()
        finally:
            self.ssh.close()


_sessions: IdlePool[_HostSession] = IdlePool(close=_HostSession.close, usable=_HostSession.usable)


@contextmanager
def exports_over_ssh(
    uri: str, settings: Settings, begin: BeginExports
) -> Iterator[dict[str, NbdExport]]:
    """Begin the pull-mode job on the qemu+ssh URI's host through begin(socket_directory=...);
    yields its exports with their sockets forwarded to this machine. Afterwards the job is ended
    and the forwarding closed; the SSH session and its directory on the host wait for the next
    backup of the host if this one went well, else they are closed (the directory removed)."""
    host, done = _sessions.take(uri, lambda: _HostSession(uri, settings)), False
    try:
        with begin(socket_directory=host.directory) as exports, ExitStack() as forwards:
            sockets = {export.socket for export in exports.values()}  # one per job
            local = {
                socket: forwards.enter_context(host.ssh.forwarding(socket)) for socket in sockets
            }
            yield {target: replace(e, socket=local[e.socket]) for target, e in exports.items()}
        done = True
    finally:
        _sessions.give(uri, host, keep=done)
