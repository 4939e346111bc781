"""Readings of a guest's counters, as app.virt.usage makes them, for usage tests."""

from app.virt.usage import Counters


def counters(at: float, cpu_s: float, *, vcpus: int = 2, disk: int = 0, net: int = 0) -> Counters:
    """A reading at `at` (monotonic seconds) of cpu_s seconds of CPU time, 512 MiB in use, and
    the bytes its disks read and wrote (each) and its interfaces received."""
    return Counters(at=at, cpu_ns=int(cpu_s * 1e9), vcpus=vcpus, memory_kib=512 * 1024,
                    memory_source="host", disk_read=disk, disk_write=disk, net_rx=net,
                    net_tx=0)  # fmt: skip
