"""The KVM overcommit rules in prose, and how one host stands with each."""

from app.services.overcommit.model import GuestLoad, Guidance, HostOvercommit
from app.services.overcommit.ratios import ratio_text

# libvirt reports no host swap (virNodeGetMemoryStats has none): said once, here.
SWAP_UNKNOWN = "not reported by libvirt"


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
    shown = ratio_text(cpu.ratio, unknown="unknown")
    return Guidance(
        rule="Do not over-commit CPU on a heavily loaded host without testing first.",
        status="warn" if busy else "info",
        detail=f"Running guests have {item.vcpus_running} vCPUs on {item.cpus or '?'} CPUs "
        f"({shown}), policy {ratio_text(cpu.policy)} ({cpu.state}).",
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


def guidance(item: HostOvercommit) -> list[Guidance]:
    """Each rule with this host's standing, in the order the page shows them."""
    rules = (_single_vcpu_rule, _wide_guest_rule, _loaded_host_rule, _memory_rule)
    return [rule(item) for rule in rules]
