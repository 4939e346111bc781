"""A running guest's pull-mode NBD export on a qemu+ssh host, read from this machine: the export's
socket (and libvirt's scratch files) go in a new directory made on the host over SSH, private to
QEMU's user there, and the socket is forwarded to a local unix socket through the same SSH
connection, so qemu-img reads the disks as it reads a local host's: one copy, only the allocated
extents, no NBD port opened on the host. Other remote transports (qemu+tcp, qemu+tls) have no such
tunnel: there a push-mode job and libvirt streams copy the disks (app.services.backups.backup_job).

Making the directory needs root on the host (QEMU's user must own it): a qemu+ssh URI with another
login is backed up with a push-mode job instead.
"""

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from functools import partial

from app.config import Settings
from app.errors import VirtdeckError
from app.services.ssh_hosts import SshSession, ssh_session
from app.virt.nbd_exports import NbdExport, SocketDirectory

log = logging.getLogger(__name__)

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
    removed afterwards with whatever QEMU or libvirt left in it."""
    made = session.run("mktemp", "-d", TEMPLATE).strip()
    if not MADE.match(made):
        raise VirtdeckError(f"mktemp on {session.host} made an unexpected path: {made[:80]!r}")
    try:
        if owner:
            if not OWNER.match(owner):
                raise VirtdeckError(f"QEMU's user on {session.host} is not user:group: {owner!r}")
            session.run("chown", "--", owner, made)
        yield made
    finally:
        try:
            session.run("rm", "-rf", "--", made)
        except VirtdeckError as exc:  # the backup itself is not at fault: say so, go on
            log.warning("could not remove %s on %s: %s", made, session.host, exc.message)


@contextmanager
def exports_over_ssh(
    uri: str, settings: Settings, begin: BeginExports
) -> Iterator[dict[str, NbdExport]]:
    """Begin the pull-mode job on the qemu+ssh URI's host through begin(socket_directory=...);
    yields its exports with their sockets forwarded to this machine. Afterwards the job is ended,
    the host's directory removed and the forwarding and the connection closed."""
    with ssh_session(uri, settings) as session:
        directory: SocketDirectory = partial(remote_socket_directory, session)
        with begin(socket_directory=directory) as exports:
            sockets = {export.socket for export in exports.values()}  # one per job
            local = {socket: session.forward_socket(socket) for socket in sockets}
            yield {target: replace(e, socket=local[e.socket]) for target, e in exports.items()}
