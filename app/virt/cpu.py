"""The CPU a new guest gets: the modes a host offers, and a probe of which one QEMU starts.

Some hosts advertise CPU features that KVM then cannot give a guest. Nested KVM on AMD is the
known case: QEMU dies at start with "failed to set MSR 0x10a" (IA32_ARCH_CAPABILITIES) for
host-passthrough and host-model, while the same guest starts with that feature disabled or with
the hypervisor's default CPU. So virtdeck does not guess: it starts a tiny transient guest, paused
and never run, with each candidate CPU in turn, and new guests get the first that QEMU accepted.
"""

import threading
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from app.errors import HostUnreachable
from app.virt.connection import (
    CPU_PROBE_PREFIX,
    HostConnection,
    libvirt_errors,
    qemu_error,
    translate,
)

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

    def as_record(self) -> dict[str, object]:
        """The plain form stored with the host."""
        return {
            "mode": self.config.mode,
            "model": self.config.model,
            "disabled": list(self.config.disabled),
            "label": self.config.label(),
            "reason": self.reason,
            "signature": self.signature,
        }


def from_record(record: dict | None) -> CpuProbe | None:
    """A stored probe back, or None when there is none or it is not of this shape."""
    try:
        config = CpuConfig(
            mode=str(record["mode"]),
            model=record.get("model"),
            disabled=tuple(str(f) for f in record.get("disabled", ())),
        )
        return CpuProbe(config, str(record["reason"]), str(record["signature"]))
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


def _probe_xml(platform_arch: str, domain_type: str, emulator: str | None, cpu: CpuConfig) -> str:
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = f"{CPU_PROBE_PREFIX}{uuid_lib.uuid4().hex[:12]}"
    ET.SubElement(domain, "memory", unit="MiB").text = str(PROBE_MEMORY_MIB)
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch=platform_arch).text = "hvm"
    cpu_element(domain, cpu)
    devices = ET.SubElement(domain, "devices")
    if emulator:
        ET.SubElement(devices, "emulator").text = emulator
    # Nothing to boot and never unpaused; no balloon, no USB: the smallest QEMU that starts.
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def try_cpu(
    conn: HostConnection, *, arch: str, domain_type: str, emulator: str | None, cpu: CpuConfig
) -> str | None:
    """Start a paused transient guest with this CPU and remove it: None if QEMU started it,
    else QEMU's error. A lost connection raises HostUnreachable (that is no answer)."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
    try:
        dom = conn.lv.createXML(_probe_xml(arch, domain_type, emulator, cpu), flags)
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
    if not refused:
        return f"QEMU starts guests with {chosen.label()} on this host"
    first, error = refused[0]
    because = f"QEMU refused {first.label()}: {error}"
    if "0x10a" in error:
        because += " (IA32_ARCH_CAPABILITIES: a known failure of nested KVM on AMD)"
    return f"{chosen.label()}, because {because}"


_cache: dict[tuple[str, str], CpuProbe] = {}
_cache_lock = threading.Lock()


def probe(
    conn: HostConnection,
    *,
    arch: str,
    domain_type: str,
    emulator: str | None,
    modes: tuple[str, ...],
    known: CpuProbe | None = None,
    candidates: list[CpuConfig] | None = None,
) -> CpuProbe:
    """Which CPU QEMU starts guests with here, trying the best first (about 2 s a try).

    The answer holds until the host's QEMU, libvirt or CPU changes: `known` (the one stored
    with the host) is taken when it is still current, and each answer is kept for this process.
    """
    sign = signature(conn, domain_type)
    if known is not None and known.signature == sign and candidates is None:
        return known
    key = (conn.uri, sign)
    if candidates is None:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
    if domain_type != "kvm":
        return CpuProbe(
            CpuConfig("default"),
            f"guests run with domain type {domain_type}, which gets the hypervisor's default CPU",
            sign,
        )
    refused: list[tuple[CpuConfig, str]] = []
    for cpu in candidates or _candidates(modes):
        error = try_cpu(conn, arch=arch, domain_type=domain_type, emulator=emulator, cpu=cpu)
        if error is None:
            found = CpuProbe(cpu, _explain(cpu, refused), sign)
            break
        refused.append((cpu, error))
    else:  # not kept: the next probe tries again
        return CpuProbe(
            CpuConfig("default"),
            f"QEMU started no probe guest here; the last error: {refused[-1][1]}",
            sign,
        )
    if candidates is None:
        with _cache_lock:
            _cache[key] = found
    return found
