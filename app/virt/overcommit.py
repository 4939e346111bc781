"""Read a host's memory, KSM and guest balloon figures for the overcommit view.

Each figure is optional: a driver that lacks a call (the test driver has none of them) gives
None or nothing for it, never an error.
"""

import weakref
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

import libvirt

from app.virt.connection import Balloons, HostConnection
from app.virt.failures import translate

STATS_FLAGS = (
    libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING
    | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
)
# KSM counters that move while ksmd scans; libvirt (as of 9.0) does not report its run flag.
KSM_COUNTERS = ("shm_pages_shared", "shm_pages_sharing", "shm_pages_unshared",
                "shm_pages_volatile", "shm_full_scans")  # fmt: skip
# Errors that mean "this host or driver does not offer that figure".
UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_OPERATION_FAILED,
    libvirt.VIR_ERR_NO_DOMAIN,
}
_page_kib: "weakref.WeakKeyDictionary[HostConnection, int]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class HostMemory:
    """The host's memory from /proc/meminfo, in KiB."""

    total_kib: int
    free_kib: int
    buffers_kib: int | None
    cached_kib: int | None


@dataclass(frozen=True)
class KsmReading:
    """The KSM counters, the run flag where reported, and the base page size."""

    run: int | None
    pages_shared: int | None
    pages_sharing: int | None
    counters: tuple[int, ...]
    page_kib: int


@dataclass(frozen=True)
class GuestMemory:
    """A running guest's memory as its balloon reports it, in KiB."""

    rss_kib: int | None
    current_kib: int | None
    maximum_kib: int | None


@dataclass(frozen=True)
class HostStats:
    """One reading of a host: memory, KSM, running guests' memory, and balloon devices."""

    memory: HostMemory | None
    ksm: KsmReading | None
    guests: dict[str, GuestMemory]
    balloons: dict[str, bool]


def optional(fn, *args):
    """fn(*args), or None when the host or driver does not offer it."""
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in UNSUPPORTED:
            return None
        raise translate(exc) from exc


def host_memory(conn: HostConnection) -> HostMemory | None:
    """Total, free, buffers and cached memory of the host, or None."""
    stats = optional(conn.lv.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    if not stats or "total" not in stats or "free" not in stats:
        return None
    return HostMemory(stats["total"], stats["free"], stats.get("buffers"), stats.get("cached"))


def page_kib(conn: HostConnection) -> int:
    """The host's base page size in KiB (from its capabilities, read once per connection)."""
    if conn not in _page_kib:
        caps = optional(conn.lv.getCapabilities)
        sizes = []
        if caps:
            sizes = [int(p.get("size", "0")) for p in ET.fromstring(caps).iter("pages")]
        _page_kib[conn] = min((s for s in sizes if s > 0), default=4)
    return _page_kib[conn]


def ksm(conn: HostConnection) -> KsmReading | None:
    """The host's KSM figures, or None where libvirt does not report them."""
    params = optional(conn.lv.getMemoryParameters, 0)
    if not params or "shm_pages_sharing" not in params:
        return None
    return KsmReading(
        run=params.get("shm_run"),
        pages_shared=params.get("shm_pages_shared"),
        pages_sharing=params.get("shm_pages_sharing"),
        counters=tuple(int(params.get(k) or 0) for k in KSM_COUNTERS),
        page_kib=page_kib(conn),
    )


def _guest_memory(stats: dict) -> GuestMemory:
    return GuestMemory(stats.get("rss"), stats.get("current"), stats.get("maximum"))


def _memory_one_by_one(conn: HostConnection) -> dict[str, GuestMemory]:
    """Running guests' memory by memoryStats(), for hosts without the bulk call."""
    found = {}
    domains = optional(conn.lv.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) or []
    for dom in domains:
        stats = optional(dom.memoryStats)
        if stats is None:  # stopped or gone since the listing
            continue
        maximum = optional(dom.maxMemory)
        found[dom.UUIDString()] = GuestMemory(stats.get("rss"), stats.get("actual"), maximum)
    return found


def guest_memory(conn: HostConnection) -> dict[str, GuestMemory]:
    """Running guests' RSS and balloon current/maximum by UUID; empty figures are None."""
    bulk = optional(conn.lv.getAllDomainStats, libvirt.VIR_DOMAIN_STATS_BALLOON, STATS_FLAGS)
    if bulk is None:
        return _memory_one_by_one(conn)
    return memory_of(
        {
            dom.UUIDString(): {k.removeprefix("balloon."): v for k, v in stats.items()}
            for dom, stats in bulk
        }
    )


def memory_of(balloons: Balloons) -> dict[str, GuestMemory]:
    """The GuestMemory of each guest from its balloon figures (as HostConnection.scan() reads
    them)."""
    return {uuid: _guest_memory(figures) for uuid, figures in balloons.items()}


def read_stats(
    conn: HostConnection, balloons: Mapping[str, bool], scanned: Balloons | None = None
) -> HostStats:
    """Everything the overcommit view reads from a host (a constant number of calls where the
    host has bulk guest stats), with which guests have a balloon device (from their XML); the
    running guests' figures are read unless a scan read them already (`scanned`)."""
    return HostStats(
        memory=host_memory(conn),
        ksm=ksm(conn),
        guests=guest_memory(conn) if scanned is None else memory_of(scanned),
        balloons=dict(balloons),
    )
