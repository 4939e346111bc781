"""Plain data that leaves app.virt: no libvirt object ever does."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Disk:
    """A disk or CD-ROM of a guest."""

    target: str
    device: str
    source: str | None
    format: str | None
    bus: str | None


@dataclass(frozen=True)
class Nic:
    """A network interface of a guest."""

    mac: str | None
    type: str
    source: str | None
    model: str | None


@dataclass(frozen=True)
class DomainSpec:
    """What a domain's XML says about it."""

    uuid: str
    name: str
    vcpus: int
    memory_max_kib: int
    memory_current_kib: int
    disks: tuple[Disk, ...] = field(default=())
    nics: tuple[Nic, ...] = field(default=())
    # A memory balloon device (memballoon with a model other than "none").
    has_balloon: bool = False
    # The tags in virtdeck's <metadata> element, as written there.
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)  # a worker keeps one per guest
class DomainState:
    """What a host's bulk listing tells of a guest without its XML."""

    uuid: str
    state: str
    autostart: bool
    persistent: bool


@dataclass(frozen=True)
class GuestInfo:
    """A guest as seen on its host right now."""

    spec: DomainSpec
    state: str
    autostart: bool
    persistent: bool
    xml: str


@dataclass(frozen=True)
class HostFacts:
    """What a host says about itself."""

    hostname: str
    hypervisor: str
    hypervisor_version: str
    libvirt_version: str
    cpu_model: str
    cpus_online: int
    memory_kib: int
    memory_source: str
    kvm_available: bool


@dataclass(frozen=True)
class VncListen:
    """Where a running guest's VNC server listens on its host: an IP address and TCP port, or
    a UNIX socket (socket True; reachable only through libvirt on that host)."""

    address: str | None
    port: int | None
    socket: bool
