"""The CPU a new guest gets: the modes a host offers, and a probe of which one QEMU starts.

Some hosts advertise CPU features that KVM then cannot give a guest. Nested KVM on AMD is the
known case: QEMU dies at start with "failed to set MSR 0x10a" (IA32_ARCH_CAPABILITIES) for
host-passthrough and host-model, while the same guest starts with that feature disabled or with
the hypervisor's default CPU. So virtdeck does not guess: it starts a tiny transient guest, paused
and never run, with each candidate CPU in turn, and new guests get the first that QEMU accepted.
"""

import math
import threading
import time
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

import libvirt

from app.errors import HostUnreachable
from app.virt.connection import CPU_PROBE_PREFIX, HostConnection
from app.virt.failures import libvirt_errors, qemu_error, translate

if TYPE_CHECKING:  # build imports this module for CpuConfig
    from app.virt.build import Platform

# The modes a user may ask for; "default" writes no <cpu> element (the hypervisor's own model).
CPU_MODES = ("host-passthrough", "host-model", "custom", "default")
PROBE_MEMORY_MIB = 16
# Features that KVM may advertise but fail to set (see the module docstring).
SUSPECT_FEATURES = ("arch-capabilities",)


@dataclass(frozen=True)
class CpuConfig:
    """A guest's <cpu>: its mode, the named model for custom, features turned off."""

    mode: str = "default"
    model: str | None = None
    disabled: tuple[str, ...] = ()

    def label(self) -> str:
        """How the page names it, e.g. 'host-model without arch-capabilities'."""
        name = f"custom model {self.model}" if self.mode == "custom" else self.mode
        if self.mode == "default":
            name = "the hypervisor's default CPU"
        return f"{name} without {', '.join(self.disabled)}" if self.disabled else name

    def with_host_limits(self, disabled: tuple[str, ...]) -> "CpuConfig":
        """The same choice with the features this host cannot give turned off."""
        return self if self.mode == "default" else CpuConfig(self.mode, self.model, disabled)


@dataclass(frozen=True)
class CpuProbe:
    """Which CPU QEMU starts guests with on a host, why, and for which host software."""

    config: CpuConfig
    reason: str
    # QEMU and libvirt versions and CPU model the answer holds for; a change probes again.
    signature: str
    # No candidate started: the default is only a guess, and the probe is tried again later.
    failed: bool = False

    def as_record(self) -> dict[str, object]:
        """The plain form stored with the host."""
        return {
            "mode": self.config.mode,
            "model": self.config.model,
            "disabled": list(self.config.disabled),
            "label": self.config.label(),
            "reason": self.reason,
            "signature": self.signature,
            "failed": self.failed,
        }


def from_record(record: dict | None) -> CpuProbe | None:
    """A stored probe back, or None when there is none or it is not of this shape."""
    try:
        config = CpuConfig(
            mode=str(record["mode"]),
            model=record.get("model"),
            disabled=tuple(str(f) for f in record.get("disabled", ())),
        )
        return CpuProbe(
            config,
            str(record["reason"]),
            str(record["signature"]),
            failed=bool(record.get("failed", False)),
        )
    except (KeyError, TypeError, AttributeError):
        return None


def cpu_element(domain: ET.Element, config: CpuConfig) -> None:
    """Add the <cpu> element of a config to a domain (none for the hypervisor default)."""
    if config.mode == "default":
        return
    cpu = ET.SubElement(domain, "cpu", mode=config.mode)
    if config.mode == "custom":
        cpu.set("match", "exact")
        ET.SubElement(cpu, "model", fallback="forbid").text = config.model
    for feature in config.disabled:
        ET.SubElement(cpu, "feature", policy="disable", name=feature)


def offered(domcaps: ET.Element | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The modes a host supports for its best domain type, and its usable named models."""
    if domcaps is None:
        return ("default",), ()
    modes = tuple(
        m for m in CPU_MODES[:3] if domcaps.find(f"cpu/mode[@name='{m}'][@supported='yes']")
    )
    models = tuple(
        sorted(
            m.text
            for m in domcaps.findall("cpu/mode[@name='custom']/model[@usable='yes']")
            if m.text
        )
    )
    return (*modes, "default"), models


def signature(conn: HostConnection, domain_type: str) -> str:
    """What a probe's answer depends on: the host's QEMU, libvirt, CPU and domain type."""
    lv = conn.lv
    with libvirt_errors():
        caps = ET.fromstring(lv.getCapabilities())
        versions = f"{lv.getVersion()}/{lv.getLibVersion()}"
    return f"{domain_type}/{versions}/{caps.findtext('host/cpu/model') or '?'}"


def _candidates(modes: tuple[str, ...]) -> list[CpuConfig]:
    """Best first: the host's own CPU, then with the suspect features off, then the default."""
    found = []
    for mode in ("host-passthrough", "host-model"):
        if mode in modes:
            found += [CpuConfig(mode), CpuConfig(mode, disabled=SUSPECT_FEATURES)]
    return [*found, CpuConfig("default")]


def _probe_xml(platform: "Platform", cpu: CpuConfig) -> str:
    """A transient guest of 16 MiB with this CPU, nothing to boot and no devices to speak of."""
    domain = ET.Element("domain", type=platform.domain_type)
    ET.SubElement(domain, "name").text = f"{CPU_PROBE_PREFIX}{uuid_lib.uuid4().hex[:12]}"
    ET.SubElement(domain, "memory", unit="MiB").text = str(PROBE_MEMORY_MIB)
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch=platform.arch).text = "hvm"
    cpu_element(domain, cpu)
    devices = ET.SubElement(domain, "devices")
    if platform.emulator:
        ET.SubElement(devices, "emulator").text = platform.emulator
    # Nothing to boot and never unpaused; no balloon, no USB: the smallest QEMU that starts.
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def try_cpu(conn: HostConnection, platform: "Platform", cpu: CpuConfig) -> str | None:
    """Start a paused transient guest with this CPU and remove it: None if QEMU started it,
    else QEMU's error. A lost connection raises HostUnreachable (that is no answer)."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
    try:
        dom = conn.lv.createXML(_probe_xml(platform, cpu), flags)
    except libvirt.libvirtError as exc:
        error = translate(exc)
        if isinstance(error, HostUnreachable):
            raise error from exc
        return qemu_error(error.message)
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise translate(exc) from exc
    return None


def _explain(chosen: CpuConfig, refused: list[tuple[CpuConfig, str]]) -> str:
    """Why new guests get this CPU: what QEMU refused first, if anything."""
    if not refused:
        return f"QEMU starts guests with {chosen.label()} on this host"
    first, error = refused[0]
    because = f"QEMU refused {first.label()}: {error}"
    if "0x10a" in error:
        because += " (IA32_ARCH_CAPABILITIES: a known failure of nested KVM on AMD)"
    return f"{chosen.label()}, because {because}"


def first_that_starts(
    conn: HostConnection, platform: "Platform", *, candidates: list[CpuConfig]
) -> CpuProbe:
    """Try each CPU in turn (about 2 s a try) and take the first that QEMU starts."""
    sign = signature(conn, platform.domain_type)
    refused: list[tuple[CpuConfig, str]] = []
    for cpu in candidates:
        error = try_cpu(conn, platform, cpu)
        if error is None:
            return CpuProbe(cpu, _explain(cpu, refused), sign)
        refused.append((cpu, error))
    return CpuProbe(
        CpuConfig("default"),
        f"QEMU started no probe guest here; the last error: {refused[-1][1]}",
        sign,
        failed=True,
    )


# Answers of this process by (URI, signature); a failed probe is tried again after a while.
_cache: dict[tuple[str, str], tuple[CpuProbe, float]] = {}
_cache_lock = threading.Lock()
RETRY_FAILED = 300.0


def current(
    conn: HostConnection, platform: "Platform", *, known: CpuProbe | None
) -> CpuProbe | None:
    """The answer that holds for this host now, without starting anything: the stored one
    (`known`) or this process's while the host's QEMU, libvirt and CPU are unchanged; None when
    the host has not been probed yet."""
    sign = signature(conn, platform.domain_type)
    if platform.domain_type != "kvm":
        return CpuProbe(
            CpuConfig("default"),
            f"guests run with domain type {platform.domain_type}, which gets the hypervisor's "
            "default CPU",
            sign,
        )
    if known is not None and known.signature == sign and not known.failed:
        return known
    with _cache_lock:
        found, until = _cache.get((conn.uri, sign), (None, 0.0))
    return found if found is not None and time.monotonic() < until else None


def probe(conn: HostConnection, platform: "Platform", *, known: CpuProbe | None) -> CpuProbe:
    """Which CPU QEMU starts guests with on this host: the current answer, or a new probe of
    the candidates best first (this starts QEMU: workers and create requests only)."""
    found = current(conn, platform, known=known)
    if found is not None:
        return found
    found = first_that_starts(conn, platform, candidates=_candidates(platform.cpu_modes))
    until = time.monotonic() + RETRY_FAILED if found.failed else math.inf
    with _cache_lock:
        _cache[(conn.uri, found.signature)] = (found, until)
    return found
