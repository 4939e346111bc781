"""Every host's running allocation ratios from one aggregate query, for the overview.

app.services.overcommit builds the full picture guest by guest; with thousands of guests that
is too slow for a page that refreshes every few seconds, and the overview needs only the sums.
"""

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, load_only

from app.models import Guest, Host
from app.services.overcommit import Ratio, get_policy, host_policy, make_ratio
from app.services.states import GuestState


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


def host_ratios(session: Session) -> list[HostRatios]:
    """Each host's sums over its present guests and its running ratios, by host name."""
    active = Guest.state.in_([state for state in GuestState if state.holds_resources])
    rows = session.execute(
        select(
            Guest.host_id,
            func.coalesce(func.sum(case((active, Guest.vcpus), else_=0)), 0),
            func.coalesce(func.sum(Guest.vcpus), 0),
            func.coalesce(func.sum(case((active, Guest.memory_max_kib), else_=0)), 0),
            func.coalesce(func.sum(Guest.memory_max_kib), 0),
        )
        .where(Guest.gone_at.is_(None))
        .group_by(Guest.host_id)
    ).all()
    sums = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
    default = get_policy(session)
    found = []
    columns = (Host.name, Host.cpus_online, Host.memory_kib, Host.policy_cpu, Host.policy_memory)
    hosts = session.scalars(select(Host).options(load_only(*columns)).order_by(Host.name))
    for host in hosts:
        vcpus, vcpus_all, memory, memory_all = sums.get(host.id, (0, 0, 0, 0))
        cpu_policy, memory_policy, _source = host_policy(host, default)
        found.append(
            HostRatios(
                host_id=host.id,
                cpus=host.cpus_online,
                memory_kib=host.memory_kib,
                vcpus_running=vcpus,
                vcpus_defined=vcpus_all,
                memory_running_max_kib=memory,
                memory_defined_kib=memory_all,
                cpu_running=make_ratio(vcpus, host.cpus_online, cpu_policy),
                memory_running=make_ratio(memory, host.memory_kib, memory_policy),
            )
        )
    return found
