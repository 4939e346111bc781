"""Register, read and remove hosts; record what their workers learn."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import Conflict, HostUnreachable, Invalid, NotFound
from app.models import Guest, Host
from app.models.base import utcnow
from app.models.guest import USAGE_CLEARED
from app.services.states import RESOURCE_STATES, GuestState
from app.virt.connection import HostConnection
from app.virt.types import HostFacts
from app.virt.uri import check_console_address, validate_uri

HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 ._-]{0,63}$")


@dataclass(frozen=True)
class HostSummary:
    """A host with the totals of its present guests."""

    host: Host
    guests_total: int
    guests_running: int
    vcpus: int
    memory_kib: int


def validate_name(raw: str) -> str:
    """The host name stripped, or Invalid naming the field."""
    name = raw.strip()
    if not HOST_NAME.match(name):
        raise Invalid(
            "name: 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    return name


def add_host(
    session: Session,
    *,
    name: str,
    uri: str,
    test_driver_dir: str = "",
    console_address: str | None = None,
) -> Host:
    """Register a host after checking its name, URI (kept as rebuilt from its checked parts)
    and console address; nothing is stored on refusal."""
    name = validate_name(name)
    uri = validate_uri(uri, test_driver_dir=test_driver_dir)
    address = check_console_address(console_address)
    if session.scalar(select(Host.id).where(Host.name == name)) is not None:
        raise Conflict(f"name: a host called '{name}' already exists", field="name")
    if session.scalar(select(Host.id).where(Host.uri == uri)) is not None:
        raise Conflict(f"uri: {uri} is already registered", field="uri")
    host = Host(name=name, uri=uri, console_address=address)
    session.add(host)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request registered the same name or URI
        raise Conflict("name or uri: already registered") from exc
    return host


def open_connection(
    uri: str, settings: Settings, *, on_close: Callable[[str], None]
) -> HostConnection:
    """A connection to the host at uri, checked again first: a URI stored by an older version,
    or a node file whose directory is no longer allowed, is refused (Invalid) and never opened."""
    checked = validate_uri(uri, test_driver_dir=settings.test_driver_dir)
    keepalive = (settings.keepalive_interval, settings.keepalive_count)
    return HostConnection(checked, keepalive=keepalive, on_close=on_close)


def set_console_address(session: Session, host_id: int, address: str | None) -> Host:
    """Set (or, with None or "", clear) where virtdeck reaches the host's VNC servers."""
    host = get_host(session, host_id)
    host.console_address = check_console_address(address)
    return host


def get_host(session: Session, host_id: int) -> Host:
    """The host, or NotFound."""
    host = session.get(Host, host_id)
    if host is None:
        raise NotFound(f"host {host_id} not found")
    return host


def remove_host(session: Session, host_id: int) -> Host:
    """Forget a host and its inventory (the host itself is not touched)."""
    host = get_host(session, host_id)
    session.execute(Guest.__table__.delete().where(Guest.host_id == host_id))
    session.delete(host)
    return host


def list_hosts(session: Session) -> list[Host]:
    """All hosts by name."""
    return list(session.scalars(select(Host).order_by(Host.name)))


@dataclass(frozen=True)
class GuestSums:
    """Sums over a host's present guests; the active ones hold host resources (what overcommit
    counts), the running ones are those libvirt reports running."""

    guests: int = 0
    running: int = 0
    vcpus: int = 0
    memory_kib: int = 0
    vcpus_active: int = 0
    memory_active_kib: int = 0


def guest_sums(session: Session, host_ids: list[int]) -> dict[int, GuestSums]:
    """GuestSums of these hosts (those with present guests), in one query that an index of
    present guests answers alone (see app.models.guest)."""
    if not host_ids:
        return {}
    running = case((Guest.state == GuestState.RUNNING, 1), else_=0)
    active = Guest.state.in_(RESOURCE_STATES)
    rows = session.execute(
        select(
            Guest.host_id,
            func.count(),
            func.coalesce(func.sum(running), 0),
            func.coalesce(func.sum(Guest.vcpus), 0),
            func.coalesce(func.sum(Guest.memory_max_kib), 0),
            func.coalesce(func.sum(case((active, Guest.vcpus), else_=0)), 0),
            func.coalesce(func.sum(case((active, Guest.memory_max_kib), else_=0)), 0),
        )
        .where(Guest.gone_at.is_(None), Guest.host_id.in_(host_ids))
        .group_by(Guest.host_id)
    ).all()
    return {row[0]: GuestSums(*(int(value) for value in row[1:])) for row in rows}


def summarize(
    session: Session, hosts: list[Host], sums: dict[int, GuestSums] | None = None
) -> list[HostSummary]:
    """Totals of present guests per host, from sums already read or in one query."""
    if sums is None:
        sums = guest_sums(session, [host.id for host in hosts])
    found = []
    for host in hosts:
        of_host = sums.get(host.id, GuestSums())
        found.append(
            HostSummary(host, of_host.guests, of_host.running, of_host.vcpus, of_host.memory_kib)
        )
    return found


def ensure_default_host(
    session: Session, *, name: str, uri: str, test_driver_dir: str = ""
) -> Host | None:
    """Register the default host when no host exists yet."""
    if not uri or session.scalar(select(func.count()).select_from(Host)):
        return None
    return add_host(session, name=name, uri=uri, test_driver_dir=test_driver_dir)


def record_facts(session: Session, host_id: int, facts: HostFacts) -> None:
    """Store what a freshly connected host says about itself."""
    host = session.get(Host, host_id)
    if host is None:
        return
    for key, value in vars(facts).items():
        if getattr(host, key) != value:
            setattr(host, key, value)
    mark_connected(host, utcnow())


def record_cpu_probe(session: Session, host_id: int, probe: dict[str, object]) -> None:
    """Store which CPU QEMU starts new guests with on this host (app.virt.cpu)."""
    host = session.get(Host, host_id)
    if host is not None and host.cpu_probe != probe:
        host.cpu_probe = probe


def mark_connected(host: Host, now: datetime) -> None:
    """Stamp a host as answering now."""
    host.connection = "connected"
    host.last_error = None
    host.unreachable_since = None
    host.last_contact_at = now


def record_unreachable(session: Session, host_id: int, error: str) -> None:
    """Mark a host unreachable, keeping the time it first became so; its guests' usage
    figures are no longer current."""
    host = session.get(Host, host_id)
    if host is None:
        return
    if host.connection != "unreachable":
        host.unreachable_since = utcnow()
    host.connection = "unreachable"
    host.last_error = error
    clear_figures(session, host_id)


def clear_figures(session: Session, host_id: int, *where: ColumnElement[bool]) -> None:
    """Clear the current figures of the host's guests (those that match `where`): the host was
    lost or they stopped, and a figure nobody reads any more is not shown as current."""
    session.execute(
        update(Guest)
        .where(Guest.host_id == host_id, Guest.usage_at.is_not(None), *where)
        .values(USAGE_CLEARED)
        .execution_options(synchronize_session=False)
    )


def require_connected(host: Host) -> None:
    """HostUnreachable (503) at once unless the host's worker is connected to it."""
    if host.connection != "connected":
        raise HostUnreachable(f"host {host.name} is {host.connection}; try again when it answers")
