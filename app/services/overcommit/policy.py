"""The overcommit policy: the allowed CPU and memory ratios, global and per host."""

import math
from typing import Any

from sqlalchemy.orm import Session

from app.errors import Invalid
from app.models import Host, OvercommitPolicy
from app.models.base import utcnow
from app.services.hosts import get_host

DEFAULT_CPU = 4.0  # OpenStack Nova's cpu_allocation_ratio since 2023.1
DEFAULT_MEMORY = 1.0  # Nova's ram_allocation_ratio
MEMORY_PRESETS = (1.0, 1.5, 2.0)  # oVirt's 100 %, 150 %, 200 %
RATIO_MIN, RATIO_MAX = 0.1, 100.0


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
