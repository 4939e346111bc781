"""Allocation ratio maths: an allocation against capacity and policy, and how a ratio is written."""

from dataclasses import dataclass

NEAR = 0.9  # a ratio at 90 % of the policy or more is "near"


@dataclass(frozen=True)
class Ratio:
    """One allocation measured against capacity and policy."""

    allocated: float  # vCPUs, or KiB
    capacity: float  # physical CPUs online, or physical memory KiB
    ratio: float | None  # allocated / capacity (None when capacity unknown)
    policy: float  # the allowed ratio
    state: str  # ok, near (>= 90 % of policy), over (> policy), unknown


def ratio_state(ratio: float | None, policy: float) -> str:
    """ok, near (at 90 % of the policy or more), over (above it), or unknown."""
    if ratio is None:
        return "unknown"
    ratio = round(ratio, 6)  # 36/8 must not become 4.500000001 > 4.5
    if ratio > policy:
        return "over"
    return "near" if ratio >= NEAR * policy else "ok"


def share(allocated: float, capacity: float | None) -> float | None:
    """allocated / capacity, or None when the capacity is unknown."""
    return allocated / capacity if capacity else None


def make_ratio(allocated: float, capacity: float | None, policy: float) -> Ratio:
    """The allocation against the capacity (unknown when the capacity is) and the policy."""
    ratio = share(allocated, capacity)
    return Ratio(allocated, capacity or 0, ratio, policy, ratio_state(ratio, policy))


def ratio_text(ratio: float | None, *, unknown: str = "—") -> str:
    """The one way a ratio is written, on pages and in messages: 1.50:1 (or `unknown`)."""
    return unknown if ratio is None else f"{ratio:.2f}:1"
