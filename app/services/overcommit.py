"""CPU and memory overcommit per host: allocation ratios, the policy, and its enforcement.

Everything here reads the database: guest rows from the sync, and the memory, KSM and balloon
readings the host's worker stores (app.virt.overcommit). The "running" allocation (guests that
hold host resources now) is what the policy judges; the "defined" one (every guest) is shown too.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid
from app.models import Guest, Host, OvercommitPolicy, OvercommitSample
from app.models.base import utcnow
from app.services.auth import Forbidden, Permission, Principal
from app.services.guests import status
from app.services.hosts import get_host
from app.virt.overcommit import HostStats, KsmReading

DEFAULT_CPU = 4.0  # OpenStack Nova's cpu_allocation_ratio since 2023.1
DEFAULT_MEMORY = 1.0  # Nova's ram_allocation_ratio
MEMORY_PRESETS = (1.0, 1.5, 2.0)  # oVirt's 100 %, 150 %, 200 %
RATIO_MIN, RATIO_MAX = 0.1, 100.0
NEAR = 0.9  # a ratio at 90 % of the policy or more is "near"
# States in which a guest has a QEMU process holding its vCPUs and memory.
ACTIVE = frozenset({"running", "blocked", "paused", "shutdown", "pmsuspended"})
SAMPLE_EVERY = timedelta(minutes=1)
SAMPLES_KEPT = timedelta(hours=25)
# Without a "run" flag from libvirt, KSM counts as running while its counters move.
KSM_QUIET = timedelta(minutes=10)
GUEST_COLUMNS = (
    Guest.host_id, Guest.uuid, Guest.name, Guest.state, Guest.vcpus, Guest.memory_max_kib,
    Guest.memory_current_kib, Guest.gone_at, Guest.transition,
)  # fmt: skip

# libvirt reports no host swap (virNodeGetMemoryStats has none): said once, here.
SWAP_UNKNOWN = "not reported by libvirt"


@dataclass(frozen=True)
class Ratio:
    """One allocation measured against capacity and policy."""

    allocated: float  # vCPUs, or KiB
    capacity: float  # physical CPUs online, or physical memory KiB
    ratio: float | None  # allocated / capacity (None when capacity unknown)
    policy: float  # the allowed ratio
    state: str  # ok, near (>= 90 % of policy), over (> policy), unknown


@dataclass(frozen=True)
class GuestLoad:
    """One guest's contribution to its host's allocation."""

    uuid: str
    name: str
    status: str
    running: bool
    vcpus: int
    memory_max_kib: int
    memory_current_kib: int
    rss_kib: int | None
    has_balloon: bool
    vcpus_over_host: bool


@dataclass(frozen=True)
class Ksm:
    """Kernel same-page merging on the host."""

    running: bool | None
    pages_shared: int | None
    pages_sharing: int | None
    saved_kib: int | None  # pages_sharing * page size


@dataclass(frozen=True)
class Guidance:
    """A KVM overcommit rule and how this host stands with it."""

    rule: str
    status: str  # ok, warn, info
    detail: str


@dataclass(frozen=True)
class HostOvercommit:
    """A host's CPU and memory allocation, policy, readings, guests and guidance."""

    host_id: int
    host_name: str
    connection: str
    cpus: int | None
    vcpus_running: int
    vcpus_defined: int
    cpu_running: Ratio
    cpu_defined: Ratio
    largest_guest_vcpus: int
    memory_kib: int | None
    memory_source: str | None
    memory_running_max_kib: int
    memory_running_current_kib: int
    memory_defined_kib: int
    memory_running: Ratio
    memory_defined: Ratio
    free_kib: int | None
    rss_kib: int | None
    ksm: Ksm | None
    policy_cpu: float
    policy_memory: float
    policy_source: str  # global or host
    guests: list[GuestLoad]
    guidance: list[Guidance]
    stats_at: datetime | None


@dataclass(frozen=True)
class Sample:
    """A host's running allocation ratios at one moment."""

    at: datetime
    cpu_ratio: float | None
    memory_ratio: float | None


def ratio_state(ratio: float | None, policy: float) -> str:
    """ok, near (at 90 % of the policy or more), over (above it), or unknown."""
    if ratio is None:
        return "unknown"
    ratio = round(ratio, 6)  # 36/8 must not become 4.500000001 > 4.5
    if ratio > policy:
        return "over"
    return "near" if ratio >= NEAR * policy else "ok"


def make_ratio(allocated: float, capacity: float | None, policy: float) -> Ratio:
    """The allocation against the capacity (unknown when the capacity is) and the policy."""
    ratio = allocated / capacity if capacity else None
    return Ratio(allocated, capacity or 0, ratio, policy, ratio_state(ratio, policy))


# -- policy -------------------------------------------------------------------------------


def validate_ratio(value: Any, field: str) -> float:
    """The ratio as a float from 0.1 to 100, or Invalid naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not RATIO_MIN <= number <= RATIO_MAX:
        raise Invalid(f"{field}: a ratio from {RATIO_MIN:g} to {RATIO_MAX:g}", field=field)
    return number


def get_policy(session: Session) -> tuple[float, float]:
    """The global (cpu, memory) allocation ratios."""
    row = session.get(OvercommitPolicy, 1)
    return (row.cpu_ratio, row.memory_ratio) if row else (DEFAULT_CPU, DEFAULT_MEMORY)


def set_policy(session: Session, *, cpu: float, memory: float) -> None:
    """Set the global ratios after checking both; nothing changes on refusal."""
    cpu, memory = validate_ratio(cpu, "cpu"), validate_ratio(memory, "memory")
    row = session.get(OvercommitPolicy, 1)
    if row is None:
        row = OvercommitPolicy(id=1)
        session.add(row)
    row.cpu_ratio, row.memory_ratio, row.updated_at = cpu, memory, utcnow()
    session.flush()


def set_host_policy(
    session: Session, host_id: int, *, cpu: float | None, memory: float | None
) -> None:
    """Set or (with None) clear a host's own ratios."""
    host = get_host(session, host_id)
    host.policy_cpu = None if cpu is None else validate_ratio(cpu, "cpu")
    host.policy_memory = None if memory is None else validate_ratio(memory, "memory")
    session.flush()


def host_policy(host: Host, default: tuple[float, float]) -> tuple[float, float, str]:
    """The host's (cpu, memory) ratios and where they come from: host or global."""
    own = host.policy_cpu is not None or host.policy_memory is not None
    cpu = host.policy_cpu if host.policy_cpu is not None else default[0]
    memory = host.policy_memory if host.policy_memory is not None else default[1]
    return cpu, memory, "host" if own else "global"


# -- reading the allocation -----------------------------------------------------------------


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
    running = guest.state in ACTIVE
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


def _ksm(stats: dict[str, Any]) -> Ksm | None:
    ksm = stats.get("ksm")
    if not ksm:
        return None
    sharing, page_kib = ksm.get("pages_sharing"), ksm.get("page_kib")
    saved = sharing * page_kib if sharing is not None and page_kib else None
    return Ksm(ksm.get("running"), ksm.get("pages_shared"), sharing, saved)


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
        ksm=_ksm(stats),
        policy_cpu=cpu_policy,
        policy_memory=memory_policy,
        policy_source=source,
        guests=loads,
        guidance=[],
        stats_at=host.stats_at,
    )
    return _with_guidance(picture)


def host_overcommit(session: Session, host_id: int) -> HostOvercommit:
    """One host's overcommit picture, or NotFound."""
    host = get_host(session, host_id)
    guests = _present_guests(session, [host_id]).get(host_id, [])
    return _build(host, guests, get_policy(session))


def pictures(session: Session, hosts: list[Host]) -> list[HostOvercommit]:
    """The overcommit pictures of these hosts, in their order, in two queries."""
    guests = _present_guests(session, [host.id for host in hosts])
    policy = get_policy(session)
    return [_build(host, guests.get(host.id, []), policy) for host in hosts]


def all_overcommit(session: Session) -> list[HostOvercommit]:
    """Every host's overcommit picture, by host name, in three queries."""
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


# -- guidance ------------------------------------------------------------------------------


def _names(loads: list[GuestLoad]) -> str:
    return ", ".join(g.name for g in loads)


def _single_vcpu_rule(item: HostOvercommit) -> Guidance:
    singles = [g for g in item.guests if g.vcpus == 1]
    running = [g for g in item.guests if g.running]
    singles_running = [g for g in running if g.vcpus == 1]
    overcommitted = (item.cpu_running.ratio or 0) > 1
    mostly_single = len(singles_running) * 2 >= len(running)
    return Guidance(
        rule="Many guests with a single vCPU over-commit CPU best: the scheduler can place them "
        "freely.",
        status="ok" if not overcommitted or mostly_single else "info",
        detail=f"{len(singles)} of {len(item.guests)} guests have one vCPU "
        f"({len(singles_running)} of {len(running)} running).",
    )


def _wide_guest_rule(item: HostOvercommit) -> Guidance:
    rule = "A guest with more vCPUs than the host has physical CPUs runs worse than with fewer."
    if not item.cpus:
        return Guidance(rule, "info", "The host's CPU count is not known yet.")
    wide = [g for g in item.guests if g.vcpus_over_host]
    if wide:
        detail = f"More vCPUs than the host's {item.cpus} CPUs: " + ", ".join(
            f"{g.name} ({g.vcpus})" for g in wide
        )
        return Guidance(rule, "warn", detail + ".")
    largest = item.largest_guest_vcpus
    return Guidance(rule, "ok", f"The largest guest has {largest} vCPUs; the host {item.cpus}.")


def _loaded_host_rule(item: HostOvercommit) -> Guidance:
    cpu = item.cpu_running
    busy = (cpu.ratio or 0) > 1 and cpu.state in ("near", "over")
    return Guidance(
        rule="Do not over-commit CPU on a heavily loaded host without testing first.",
        status="warn" if busy else "info",
        detail=f"Running guests have {item.vcpus_running} vCPUs on {item.cpus or '?'} CPUs "
        f"({ratio_text(cpu.ratio)}), policy {ratio_text(cpu.policy)} ({cpu.state}).",
    )


def _memory_rule(item: HostOvercommit) -> Guidance:
    balloons = [g for g in item.guests if g.has_balloon]
    ksm = item.ksm
    if ksm is None or ksm.running is None:
        ksm_text = "KSM: not reported"
    elif ksm.running:
        saved = f", saving {ksm.saved_kib // 1024} MiB" if ksm.saved_kib is not None else ""
        ksm_text = f"KSM: running{saved}"
    else:
        ksm_text = "KSM: not running"
    with_balloon = _names(balloons) or "none"
    overcommitted = (item.memory_running.ratio or 0) > 1
    unsupported = not balloons or not (ksm and ksm.running)
    return Guidance(
        rule="Memory over-commit relies on swap, ballooning and KSM.",
        status="warn" if overcommitted and unsupported else "info",
        detail=f"Balloon devices: {with_balloon} ({len(balloons)} of {len(item.guests)} guests); "
        f"{ksm_text}; swap: {SWAP_UNKNOWN}.",
    )


def _with_guidance(item: HostOvercommit) -> HostOvercommit:
    rules = (_single_vcpu_rule, _wide_guest_rule, _loaded_host_rule, _memory_rule)
    item.guidance.extend(rule(item) for rule in rules)
    return item


# -- enforcement ---------------------------------------------------------------------------


def check_force(principal: Principal, what: str) -> None:
    """Forbidden naming force unless the principal is an admin."""
    if not principal.allows(Permission.ADMIN):
        raise Forbidden(f"force: only an admin may force {what}", field="force")


def check_policy(
    session: Session, host_id: int, *, add_vcpus: int, add_memory_kib: int, action: str = "this"
) -> None:
    """Conflict (409) with the numbers when adding this guest would take the host over policy."""
    item = host_overcommit(session, host_id)
    cpu = make_ratio(item.vcpus_running + add_vcpus, item.cpus, item.policy_cpu)
    memory = make_ratio(
        item.memory_running_max_kib + add_memory_kib, item.memory_kib, item.policy_memory
    )
    reasons, field = [], None
    if cpu.state == "over":
        reasons.append(
            f"{action} would put {cpu.allocated:g} vCPUs on {cpu.capacity:g} CPUs "
            f"({ratio_text(cpu.ratio)}), over the policy of {ratio_text(cpu.policy)}"
        )
        field = "vcpus"
    if memory.state == "over":
        reasons.append(
            f"{action} would put {_gib(memory.allocated)} GiB of guest memory on "
            f"{_gib(memory.capacity)} GiB ({ratio_text(memory.ratio)}), "
            f"over the policy of {ratio_text(memory.policy)}"
        )
        field = field or "memory"
    if reasons:
        raise Conflict(
            f"{field}: {'; '.join(reasons)}; an admin can force it",
            field=field,
            extra={"overcommit": {"cpu": _numbers(cpu), "memory": _numbers(memory)}},
        )


def check_start_policy(
    session: Session, guest: Guest, *, vcpus: int, memory_kib: int, action: str
) -> None:
    """Conflict (409) when starting the guest with this size (its own, or a snapshot's for a
    revert) would take its host over policy."""
    check_policy(session, guest.host_id, add_vcpus=vcpus, add_memory_kib=memory_kib, action=action)


def ratio_text(ratio: float | None) -> str:
    """A ratio as people write it: 4.5:1, 4.0:1, 1.25:1 (or "unknown")."""
    if ratio is None:
        return "unknown"
    text = f"{round(ratio, 2):g}"
    return f"{text}:1" if "." in text else f"{text}.0:1"


def _gib(kib: float) -> str:
    return f"{kib / 1024 / 1024:.1f}"


def _numbers(ratio: Ratio) -> dict[str, Any]:
    return {"allocated": ratio.allocated, "capacity": ratio.capacity, "ratio": ratio.ratio,
            "policy": ratio.policy, "state": ratio.state}  # fmt: skip


# -- readings from the worker, and samples -------------------------------------------------


def ksm_state(reading: KsmReading, previous: dict[str, Any] | None, now: datetime) -> dict:
    """The KSM reading with "running": libvirt's run flag, else whether its counters move."""
    counters = list(reading.counters)
    seen_since = (previous or {}).get("seen_since") or now.isoformat()
    changed_at = (previous or {}).get("changed_at")
    if previous is not None and previous.get("counters") != counters:
        changed_at = now.isoformat()
    if reading.run is not None:
        running: bool | None = reading.run == 1
    elif changed_at and now - datetime.fromisoformat(changed_at) < KSM_QUIET:
        running = True
    elif not any(counters) or now - datetime.fromisoformat(seen_since) >= KSM_QUIET:
        running = False  # it never scanned anything, or nothing moved for a while
    else:
        running = None
    return {
        "running": running,
        "pages_shared": reading.pages_shared,
        "pages_sharing": reading.pages_sharing,
        "page_kib": reading.page_kib,
        "counters": counters,
        "seen_since": seen_since,
        "changed_at": changed_at,
    }


def record_stats(session: Session, host_id: int, stats: HostStats) -> None:
    """Store a host's latest readings, and a sample of its ratios at most once a minute."""
    host = session.get(Host, host_id)
    if host is None:
        return
    now = utcnow()
    previous = (host.stats or {}).get("ksm")
    host.stats = {
        "memory": None if stats.memory is None else dict(vars(stats.memory)),
        "ksm": None if stats.ksm is None else ksm_state(stats.ksm, previous, now),
        "guests": {uuid: dict(vars(g)) for uuid, g in stats.guests.items()},
        "balloons": dict(stats.balloons),
    }
    host.stats_at = now
    record_sample(session, host, now)


def record_sample(session: Session, host: Host, now: datetime) -> None:
    """Add a sample of the host's running ratios unless one is younger than a minute."""
    last = session.scalar(
        select(OvercommitSample.at)
        .where(OvercommitSample.host_id == host.id)
        .order_by(OvercommitSample.at.desc())
        .limit(1)
    )
    if last is not None and now - last < SAMPLE_EVERY:
        return
    guests = _present_guests(session, [host.id]).get(host.id, [])
    item = _build(host, guests, get_policy(session))
    session.add(
        OvercommitSample(
            host_id=host.id,
            at=now,
            cpu_ratio=item.cpu_running.ratio,
            memory_ratio=item.memory_running.ratio,
        )
    )
    session.execute(
        delete(OvercommitSample).where(
            OvercommitSample.host_id == host.id, OvercommitSample.at < now - SAMPLES_KEPT
        )
    )


def samples(session: Session, host_id: int, *, hours: float = 24) -> list[Sample]:
    """The host's samples of the last hours, oldest first."""
    get_host(session, host_id)
    since = utcnow() - timedelta(hours=hours)
    rows = session.execute(
        select(OvercommitSample.at, OvercommitSample.cpu_ratio, OvercommitSample.memory_ratio)
        .where(OvercommitSample.host_id == host_id, OvercommitSample.at >= since)
        .order_by(OvercommitSample.at)
    )
    return [Sample(*row) for row in rows]
