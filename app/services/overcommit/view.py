"""The overcommit read model: each host's allocation, guests and guidance from the database.

Everything here reads the database: guest rows from the sync, and the memory, KSM and balloon
readings the host's worker stores (app.virt.overcommit). The "running" allocation (guests that
hold host resources now) is what the policy judges; the "defined" one (every guest) is shown too.
"""

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, undefer

from app.models import Guest, Host
from app.services.guests import status
from app.services.hosts import get_host
from app.services.overcommit.guidance import guidance
from app.services.overcommit.ksm import stored_ksm
from app.services.overcommit.model import GuestLoad, HostOvercommit
from app.services.overcommit.policy import get_policy, host_policy
from app.services.overcommit.ratios import make_ratio
from app.services.states import GuestState

GUEST_COLUMNS = (
    Guest.host_id, Guest.uuid, Guest.name, Guest.state, Guest.vcpus, Guest.memory_max_kib,
    Guest.memory_current_kib, Guest.gone_at, Guest.transition,
)  # fmt: skip


def _present_guests(session: Session, host_ids: list[int] | None) -> dict[int, list[Row]]:
    """Present guests by host id, in one query: rows of GUEST_COLUMNS, not ORM objects (a host
    with 500 guests made a third of its overcommit page's time out of building them)."""
    query = select(*GUEST_COLUMNS).where(Guest.gone_at.is_(None)).order_by(Guest.name)
    if host_ids is not None:
        query = query.where(Guest.host_id.in_(host_ids))
    found: dict[int, list[Row]] = {}
    for guest in session.execute(query):
        found.setdefault(guest.host_id, []).append(guest)
    return found


def _guest_load(guest: Row, host: Host, stats: dict[str, Any]) -> GuestLoad:
    running = GuestState.of(guest.state).holds_resources
    reading = stats.get("guests", {}).get(guest.uuid, {}) if running else {}
    return GuestLoad(
        uuid=guest.uuid,
        name=guest.name,
        status=status(guest, host),
        running=running,
        vcpus=guest.vcpus,
        memory_max_kib=guest.memory_max_kib,
        memory_current_kib=reading.get("current_kib") or guest.memory_current_kib,
        rss_kib=reading.get("rss_kib"),
        has_balloon=bool(stats.get("balloons", {}).get(guest.uuid, False)),
        vcpus_over_host=bool(host.cpus_online and guest.vcpus > host.cpus_online),
    )


def _sum_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _build(host: Host, guests: list[Row], policy: tuple[float, float]) -> HostOvercommit:
    """The overcommit picture of one host from its row and its present guests."""
    cpu_policy, memory_policy, source = host_policy(host, policy)
    stats = host.stats or {}
    loads = [_guest_load(g, host, stats) for g in guests]
    running = [g for g in loads if g.running]
    vcpus_running = sum(g.vcpus for g in running)
    vcpus_defined = sum(g.vcpus for g in loads)
    memory_running = sum(g.memory_max_kib for g in running)
    memory_defined = sum(g.memory_max_kib for g in loads)
    memory = stats.get("memory") or {}
    picture = HostOvercommit(
        host_id=host.id,
        host_name=host.name,
        connection=host.connection,
        cpus=host.cpus_online,
        vcpus_running=vcpus_running,
        vcpus_defined=vcpus_defined,
        cpu_running=make_ratio(vcpus_running, host.cpus_online, cpu_policy),
        cpu_defined=make_ratio(vcpus_defined, host.cpus_online, cpu_policy),
        largest_guest_vcpus=max((g.vcpus for g in loads), default=0),
        memory_kib=host.memory_kib,
        memory_source=host.memory_source,
        memory_running_max_kib=memory_running,
        memory_running_current_kib=sum(g.memory_current_kib for g in running),
        memory_defined_kib=memory_defined,
        memory_running=make_ratio(memory_running, host.memory_kib, memory_policy),
        memory_defined=make_ratio(memory_defined, host.memory_kib, memory_policy),
        free_kib=memory.get("free_kib"),
        rss_kib=_sum_known([g.rss_kib for g in running]),
        ksm=stored_ksm(stats),
        policy_cpu=cpu_policy,
        policy_memory=memory_policy,
        policy_source=source,
        guests=loads,
        guidance=[],
        stats_at=host.stats_at,
    )
    picture.guidance.extend(guidance(picture))
    return picture


def build_one(session: Session, host: Host) -> HostOvercommit:
    """The overcommit picture of this host row, in two queries."""
    guests = _present_guests(session, [host.id]).get(host.id, [])
    return _build(host, guests, get_policy(session))


def host_overcommit(session: Session, host_id: int) -> HostOvercommit:
    """One host's overcommit picture, or NotFound."""
    return build_one(session, get_host(session, host_id))


def pictures(session: Session, hosts: list[Host]) -> list[HostOvercommit]:
    """The overcommit pictures of these hosts, in their order, in three queries (their
    readings, deferred in the model, all in one)."""
    ids = [host.id for host in hosts]
    guests = _present_guests(session, ids)
    session.execute(select(Host).where(Host.id.in_(ids)).options(undefer(Host.stats))).all()
    policy = get_policy(session)
    return [_build(host, guests.get(host.id, []), policy) for host in hosts]


def all_overcommit(session: Session) -> list[HostOvercommit]:
    """Every host's overcommit picture, by host name, in four queries."""
    return pictures(session, list(session.scalars(select(Host).order_by(Host.name))))


def fleet_totals(items: list[HostOvercommit]) -> dict[str, Any]:
    """Sums over the hosts, and the running ratios over those whose capacity is known."""
    cpus = sum(i.cpus or 0 for i in items)
    memory = sum(i.memory_kib or 0 for i in items)
    vcpus_known = sum(i.vcpus_running for i in items if i.cpus)
    memory_known = sum(i.memory_running_max_kib for i in items if i.memory_kib)
    return {
        "hosts": len(items),
        "cpus": cpus,
        "vcpus_running": sum(i.vcpus_running for i in items),
        "vcpus_defined": sum(i.vcpus_defined for i in items),
        "memory_kib": memory,
        "memory_running_max_kib": sum(i.memory_running_max_kib for i in items),
        "memory_defined_kib": sum(i.memory_defined_kib for i in items),
        "cpu_ratio": vcpus_known / cpus if cpus else None,
        "memory_ratio": memory_known / memory if memory else None,
        "hosts_over": sum(1 for i in items if "over" in _states(i)),
        "hosts_near": sum(1 for i in items if "near" in _states(i) and "over" not in _states(i)),
    }


def _states(item: HostOvercommit) -> tuple[str, str]:
    return item.cpu_running.state, item.memory_running.state
