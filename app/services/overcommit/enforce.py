"""Enforcing the overcommit policy: refuse what takes a host over it, unless an admin forces."""

from typing import Any

from sqlalchemy.orm import Session

from app.errors import Conflict
from app.models import Guest
from app.services.auth import Forbidden, Permission, Principal
from app.services.overcommit.ratios import Ratio, make_ratio, ratio_text
from app.services.overcommit.view import host_overcommit


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


def _gib(kib: float) -> str:
    return f"{kib / 1024 / 1024:.1f}"


def _numbers(ratio: Ratio) -> dict[str, Any]:
    return {"allocated": ratio.allocated, "capacity": ratio.capacity, "ratio": ratio.ratio,
            "policy": ratio.policy, "state": ratio.state}  # fmt: skip
