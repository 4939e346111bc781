"""Every host's running allocation ratios from the guest sums of one aggregate query, for the
overview.

app.services.overcommit builds the full picture guest by guest; with thousands of guests that
is too slow for a page that refreshes every few seconds, and the overview needs only the sums.
"""

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.models import Host
from app.services.hosts import GuestSums
from app.services.overcommit import Ratio, get_policy, host_policy, make_ratio


@dataclass(frozen=True)
class HostRatios:
    """A host's allocation sums and its running ratios against its policy."""

    host_id: int
    cpus: int | None
    memory_kib: int | None
    vcpus_running: int
    vcpus_defined: int
    memory_running_max_kib: int
    memory_defined_kib: int
    cpu_running: Ratio
    memory_running: Ratio


def host_ratios(
    session: Session, hosts: list[Host], sums: dict[int, GuestSums]
) -> list[HostRatios]:
    """Each host's sums over its present guests (from guest_sums) and its running ratios, in
    the order of hosts."""
    default = get_policy(session)
    found = []
    for host in hosts:
        of_host = sums.get(host.id, GuestSums())
        cpu_policy, memory_policy, _source = host_policy(host, default)
        found.append(
            HostRatios(
                host_id=host.id,
                cpus=host.cpus_online,
                memory_kib=host.memory_kib,
                vcpus_running=of_host.vcpus_active,
                vcpus_defined=of_host.vcpus,
                memory_running_max_kib=of_host.memory_active_kib,
                memory_defined_kib=of_host.memory_kib,
                cpu_running=make_ratio(of_host.vcpus_active, host.cpus_online, cpu_policy),
                memory_running=make_ratio(
                    of_host.memory_active_kib, host.memory_kib, memory_policy
                ),
            )
        )
    return found
