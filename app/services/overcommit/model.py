"""The overcommit read model's shapes: a host's picture, its guests' loads, KSM and guidance."""

from dataclasses import dataclass
from datetime import datetime

from app.services.overcommit.ratios import Ratio


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
