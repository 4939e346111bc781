"""What a host's running guests use, as counters read in one bulk call (getAllDomainStats): CPU
time, vCPUs, memory, and the bytes their disks and interfaces moved. Rates come from two
readings (app.services.usage); a driver that reports no such figures (the test driver) gives
none."""

import time
from dataclasses import dataclass

import libvirt

from app.virt.connection import HostConnection
from app.virt.overcommit import STATS_FLAGS, optional

GROUPS = (
    libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_BLOCK
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
)


COUNTERS = (("block", "rd.bytes"), ("block", "wr.bytes"), ("net", "rx.bytes"), ("net", "tx.bytes"))


@dataclass(frozen=True)
class Counters:
    """A running guest's counters at one moment (seconds on the monotonic clock): CPU time in
    ns, vCPUs, memory in use in KiB and whose figure it is ("guest": what the guest's balloon
    driver reports in use; "host": QEMU's resident memory), bytes read and written by its
    disks, received and sent by its interfaces."""

    at: float
    cpu_ns: int
    vcpus: int
    memory_kib: int | None
    memory_source: str | None
    disk_read: int
    disk_write: int
    net_rx: int
    net_tx: int


def _total(stats: dict, group: str, counter: str) -> int:
    """The sum of a counter over a group's numbered items (block.0.rd.bytes, block.1...)."""
    return sum(
        int(stats.get(f"{group}.{i}.{counter}", 0)) for i in range(stats.get(f"{group}.count", 0))
    )


def _memory(stats: dict) -> tuple[int | None, str | None]:
    available, usable = stats.get("balloon.available"), stats.get("balloon.usable")
    if available is not None and usable is not None:
        return max(0, available - usable), "guest"
    rss = stats.get("balloon.rss")
    return (rss, "host") if rss is not None else (None, None)


def read_counters(conn: HostConnection) -> dict[str, Counters]:
    """The running guests' counters by UUID, in one call that does not wait for a busy QEMU;
    empty where the driver reports no CPU time."""
    bulk = optional(conn.lv.getAllDomainStats, GROUPS, STATS_FLAGS) or []
    at = time.monotonic()
    found = {}
    for dom, stats in bulk:
        totals = [_total(stats, group, counter) for group, counter in COUNTERS]
        if "cpu.time" not in stats or None in totals:  # a partial reading is no reading
            continue
        memory, source = _memory(stats)
        disk_read, disk_write, net_rx, net_tx = totals
        found[dom.UUIDString()] = Counters(
            at=at,
            cpu_ns=int(stats["cpu.time"]),
            vcpus=int(stats.get("vcpu.current", 1)) or 1,
            memory_kib=memory,
            memory_source=source,
            disk_read=disk_read,
            disk_write=disk_write,
            net_rx=net_rx,
            net_tx=net_tx,
        )
    return found
