"""A host's storage pools and virtual networks changed by an admin: start or stop one, make a
directory pool. A network that running guests are attached to is not stopped (they would lose
their link); a new pool's name and directory are checked before the host is asked."""

import posixpath
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, check_all
from app.models import Guest
from app.services import host_storage
from app.services.host_storage import Network, Pool, on_host, volume_users
from app.services.ports import HostCalls
from app.services.states import RESOURCE_STATES
from app.virt import networks as virt_networks
from app.virt import pools as virt_pools
from app.virt import volumes as virt_volumes

POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_MAX = 1024
# Directories a pool must not take over: the kernel's, the devices', the boot files, the
# system's configuration and runtime state.
SYSTEM_DIRECTORIES = ("/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc")


def _check_name(name: str) -> None:
    if not POOL_NAME.fullmatch(name):
        raise Invalid(
            "name: 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter "
            "or digit",
            field="name",
        )


def _check_path(path: str) -> None:
    if not path.startswith("/") or len(path) > PATH_MAX or any(ord(c) < 32 for c in path):
        raise Invalid("path: an absolute directory path on the host", field="path")
    if posixpath.normpath(path) != path or path.startswith("//"):  # (normpath keeps a "//")
        raise Invalid(
            f"path: write it without '..', '.', double or trailing slashes "
            f"({posixpath.normpath(path)})",
            field="path",
        )
    if path == "/" or any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRECTORIES):
        raise Invalid(f"path: {path} is a system directory; choose another", field="path")


def create_directory_pool(
    session: Session, sync: HostCalls, *, host_id: int, name: str, path: str
) -> Pool:
    """A new directory pool on the host, started and set to start with the host; 422 naming
    each field that is wrong, 409 when the host already has a pool of that name."""
    check_all(lambda: _check_name(name), lambda: _check_path(path))

    def create(conn) -> Pool:
        if any(pool.name == name for pool in virt_volumes.list_pools(conn)):
            raise Conflict(f"name: the host already has a storage pool named {name}", field="name")
        return virt_pools.create_directory_pool(conn, name, path)

    return on_host(session, sync, host_id, create)


def set_pool_active(
    session: Session, sync: HostCalls, *, host_id: int, pool: str, active: bool
) -> Pool:
    """Start or stop one of the host's pools (its volumes stay; backups and new disks need it
    started); 409 for stopping one whose volumes running guests use, naming them (a logical or
    iSCSI pool's volumes go away with it)."""
    if not active:
        volumes = host_storage.volumes(session, sync, host_id=host_id, pool=pool)
        users = sorted(
            {name for names in volume_users(session, host_id, volumes, running=True).values()
             for name in names}
        )  # fmt: skip
        if users:
            raise Conflict(
                f"storage pool {pool} holds disks of {', '.join(users)}; shut "
                f"{'it' if len(users) == 1 else 'them'} down first",
                extra={"guests": users},
            )
    return on_host(
        session, sync, host_id, lambda conn: virt_pools.set_pool_active(conn, pool, active=active)
    )


def guests_on_network(
    session: Session, host_id: int, network: str, bridge: str | None
) -> list[str]:
    """The names of the host's guests holding resources (running, paused…) with an interface
    on the virtual network, or plugged straight into its bridge (type="bridge": they lose
    their link all the same when it stops)."""
    guests = session.scalars(
        select(Guest)
        .where(Guest.host_id == host_id, Guest.gone_at.is_(None), Guest.state.in_(RESOURCE_STATES))
        .order_by(Guest.name)
    )
    attached = {("network", network)} | ({("bridge", bridge)} if bridge else set())
    return [
        guest.name
        for guest in guests
        if any((nic.get("type"), nic.get("source")) in attached for nic in guest.nics)
    ]


def set_network_active(
    session: Session, sync: HostCalls, *, host_id: int, network: str, active: bool
) -> Network:
    """Start or stop one of the host's virtual networks; 409 for stopping one that running
    guests are attached to, naming them."""
    if not active:
        found = on_host(
            session, sync, host_id, lambda conn: virt_networks.get_network(conn, network)
        )
        users = guests_on_network(session, host_id, network, found.bridge)
        if users:
            raise Conflict(
                f"network {network} is in use by {', '.join(users)}; shut "
                f"{'it' if len(users) == 1 else 'them'} down first",
                extra={"guests": users},
            )
    return on_host(
        session,
        sync,
        host_id,
        lambda conn: virt_networks.set_network_active(conn, network, active=active),
    )
