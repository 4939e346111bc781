"""Create a guest: check the request against its host, then make its disk, define and start it.

Everything is checked before anything is made, so a refused request leaves nothing on the host.
A step that fails later takes back what the earlier ones made (the new volume, the definition).
A request that must allocate a new volume runs as a job; the others finish within the request.
"""

import logging
import re
import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Conflict, HostUnreachable, Invalid, NotFound, VirtdeckError
from app.models import Guest, Host, Job
from app.services import jobs as job_service
from app.services.auth import Principal
from app.services.guests import get_guest
from app.services.inventory import record_guest
from app.services.overcommit import check_force, check_policy
from app.services.ports import HostCalls, JobQueue, Reporter
from app.virt import build, domains, networks, teardown, volumes
from app.virt.build import DiskSource, GuestPlan
from app.virt.connection import CPU_PROBE_PREFIX, HostConnection
from app.virt.cpu import CPU_MODES, CpuConfig, CpuProbe, from_record
from app.virt.cpu import probe as cpu_probe
from app.virt.images import ImageHeader
from app.virt.types import GuestInfo

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB, for hosts whose memory is not known yet
MAX_VCPUS = 4096
MAX_DISK_GIB = 64 * 1024
MAX_REF = 255  # pool, volume and network names
FIRMWARES = ("bios", "uefi")
# The formats an existing volume may be attached as: the request says which (never libvirt's
# probe of the volume's header, which a guest can write); a CD-ROM is always raw.
VOLUME_FORMATS = ("raw", "qcow2")
# A job waits this long for the host to make the volume, define and start the guest.
JOB_TIMEOUT = 900.0


def check_guest_name(name: str) -> None:
    """A new guest's name follows the rule and is none of virtdeck's own probe guests'."""
    if not name or not NAME.fullmatch(name):
        raise Invalid(f"name: {NAME_RULE}", field="name")
    if name.startswith(CPU_PROBE_PREFIX):
        raise Invalid(
            f"name: names starting with {CPU_PROBE_PREFIX} are kept for virtdeck's CPU probe",
            field="name",
        )


def volume_name(guest_name: str) -> str:
    """The name of a new guest's new volume: its name with .qcow2."""
    return f"{guest_name}.qcow2"


@dataclass(frozen=True)
class NewDisk:
    """A new qcow2 volume of size_gib GiB, to be made in pool."""

    pool: str
    size_gib: int


@dataclass(frozen=True)
class VolumeRef:
    """An existing volume of a storage pool, and the format to attach it as."""

    pool: str
    volume: str
    format: str = "raw"


@dataclass(frozen=True)
class CreateRequest:
    """What a user asks for; nothing in it is trusted yet."""

    host_id: int | None
    name: str
    vcpus: int
    memory_mib: int
    disk: NewDisk | VolumeRef | None = None
    cdrom: VolumeRef | None = None
    network: str | None = None
    firmware: str = "bios"
    # None: what the host's CPU probe found QEMU starts (app.virt.cpu).
    cpu_mode: str | None = None
    cpu_model: str | None = None
    start: bool = False
    force: bool = False


@dataclass(frozen=True)
class CreatePlan:
    """A checked request: the guest to define, the volume to make first, whether to start."""

    host_id: int
    guest: GuestPlan
    new_disk: NewDisk | None
    start: bool

    @property
    def volume_name(self) -> str:
        """The name of the volume to make."""
        return volume_name(self.guest.name)


@dataclass(frozen=True)
class Created:
    """What a create gave back: the guest at once, or the job that is making it."""

    guest: Guest | None = None
    job: Job | None = None


def disk_choice(
    pool: str | None, size_gib: int | None, volume: str | None, *, format_: str | None = None
) -> NewDisk | VolumeRef:
    """A new volume (pool and size) or an existing one (pool, volume and its format, raw unless
    it says), never both."""
    if size_gib is not None and volume is not None:
        raise Invalid(
            "disk.volume: give a size for a new volume or an existing volume, not both",
            field="disk.volume",
        )
    if size_gib is None and volume is None:
        raise Invalid(
            "disk.size_gib: give a size in GiB for a new volume, or an existing volume",
            field="disk.size_gib",
        )
    if volume is not None:
        return VolumeRef(pool=pool or "", volume=volume, format=format_ or "raw")
    if format_ is not None:
        raise Invalid(
            "disk.format: only for an existing volume (a new one is always qcow2)",
            field="disk.format",
        )
    return NewDisk(pool=pool or "", size_gib=size_gib or 0)


def _check_ref(value: str, field: str, what: str) -> None:
    if not value or len(value) > MAX_REF:
        raise Invalid(f"{field}: choose a {what}", field=field)


def _check_sizes(request: CreateRequest, host: Host) -> None:
    if not 1 <= request.vcpus <= MAX_VCPUS:
        raise Invalid(f"vcpus: a whole number from 1 to {MAX_VCPUS}", field="vcpus")
    cpus = host.cpus_online
    if cpus and request.vcpus > cpus and not request.force:
        raise Invalid(
            f"vcpus: the host has {cpus} CPUs; more vCPUs than that needs force (admins only)",
            field="vcpus",
        )
    limit = host.memory_kib // 1024 if host.memory_kib else MAX_MEMORY_MIB
    if not MIN_MEMORY_MIB <= request.memory_mib <= limit:
        raise Invalid(
            f"memory_mib: from {MIN_MEMORY_MIB} MiB to {limit} MiB (the host's memory)",
            field="memory_mib",
        )


def _check_devices(request: CreateRequest) -> None:
    disk = request.disk
    if disk is not None:
        _check_ref(disk.pool, "disk.pool", "storage pool")
    if isinstance(disk, NewDisk) and not 1 <= disk.size_gib <= MAX_DISK_GIB:
        raise Invalid(
            f"disk.size_gib: a whole number of GiB from 1 to {MAX_DISK_GIB}", field="disk.size_gib"
        )
    if isinstance(disk, VolumeRef):
        _check_ref(disk.volume, "disk.volume", "volume")
        if disk.format not in VOLUME_FORMATS:
            raise Invalid("disk.format: raw or qcow2", field="disk.format")
    if request.cdrom is not None:
        _check_ref(request.cdrom.pool, "cdrom.pool", "storage pool")
        _check_ref(request.cdrom.volume, "cdrom.volume", "volume")
        if request.cdrom.format != "raw":
            raise Invalid(
                "cdrom.format: a CD-ROM is attached read-only as raw", field="cdrom.format"
            )
    if request.network is not None:
        _check_ref(request.network, "network", "network")
    if request.firmware not in FIRMWARES:
        raise Invalid("firmware: bios or uefi", field="firmware")
    _check_cpu_request(request)


def _check_cpu_request(request: CreateRequest) -> None:
    if request.cpu_mode is not None and request.cpu_mode not in CPU_MODES:
        raise Invalid(
            f"cpu_mode: one of {', '.join(CPU_MODES)}, or leave it out for the host's choice",
            field="cpu_mode",
        )
    if (request.cpu_mode == "custom") != (request.cpu_model is not None):
        raise Invalid(
            "cpu_model: name a CPU model with cpu_mode custom, and only then", field="cpu_model"
        )
    if request.cpu_model is not None:
        _check_ref(request.cpu_model, "cpu_model", "CPU model")


def check_request(session: Session, request: CreateRequest, principal: Principal) -> Host:
    """The host, once everything that needs no call to it is acceptable."""
    if request.force:
        check_force(principal, "a guest with more vCPUs than host CPUs, or over the policy")
    host = session.get(Host, request.host_id) if request.host_id is not None else None
    if host is None:
        raise Invalid("host_id: choose a registered host", field="host_id")
    check_guest_name(request.name)
    _check_sizes(request, host)
    _check_devices(request)
    if not request.force:  # a new guest counts as running, started now or later
        memory_kib = request.memory_mib * 1024
        check_policy(
            session, host.id, add_vcpus=request.vcpus, add_memory_kib=memory_kib, action="create"
        )
    return host


def _attachable(conn: HostConnection, ref: VolumeRef, field: str) -> DiskSource:
    """The source of an existing volume in the format the request names, or Invalid naming the
    field at fault; its header is read only to refuse what would make QEMU open another file."""
    try:
        pool = volumes.get_pool(conn, ref.pool)
    except NotFound as exc:
        raise Invalid(
            f"{field}.pool: no storage pool '{ref.pool}' on this host", field=f"{field}.pool"
        ) from exc
    if not pool.active:
        raise Invalid(
            f"{field}.pool: storage pool '{ref.pool}' is not active", field=f"{field}.pool"
        )
    try:
        volume = volumes.get_volume(conn, ref.pool, ref.volume)
    except NotFound as exc:
        raise Invalid(
            f"{field}.volume: no volume '{ref.volume}' in pool '{ref.pool}'",
            field=f"{field}.volume",
        ) from exc
    if volume.kind not in ("file", "block"):
        raise Invalid(
            f"{field}.volume: a {volume.kind} volume cannot be attached", field=f"{field}.volume"
        )
    _check_header(volumes.volume_header(conn, ref.pool, ref.volume), ref, field)
    return DiskSource(path=volume.path, kind=volume.kind, format=ref.format)


def _check_header(header: ImageHeader, ref: VolumeRef, field: str) -> None:
    """Refuse a volume whose header disagrees with the format asked for, or names other files."""
    if header.names_other_files:
        what = "a backing file" if header.backing_file else "an external data file"
        raise Invalid(
            f"{field}.volume: '{ref.volume}' starts with a qcow2 header that names {what}, "
            "which QEMU would open on the host; such volumes are refused (read as raw it would "
            "be harmless, but it is most likely a guest's raw disk carrying a header that the "
            "guest wrote)",
            field=f"{field}.volume",
        )
    if header.qcow2 and ref.format != "qcow2":
        if field == "cdrom":
            raise Invalid(
                f"cdrom.volume: '{ref.volume}' is a qcow2 image, not boot media "
                "(a CD-ROM is attached read-only as raw)",
                field="cdrom.volume",
            )
        raise Invalid(
            f"{field}.format: '{ref.volume}' is a qcow2 image; give format qcow2 to attach it",
            field=f"{field}.format",
        )
    if ref.format == "qcow2" and not header.qcow2:
        raise Invalid(
            f"{field}.format: '{ref.volume}' is not a qcow2 image; attach it as raw",
            field=f"{field}.format",
        )


def _check_new_disk(conn: HostConnection, disk: NewDisk, volume_name: str) -> None:
    try:
        pool = volumes.get_pool(conn, disk.pool)
    except NotFound as exc:
        raise Invalid(
            f"disk.pool: no storage pool '{disk.pool}' on this host", field="disk.pool"
        ) from exc
    if not pool.active:
        raise Invalid(f"disk.pool: storage pool '{disk.pool}' is not active", field="disk.pool")
    if not pool.holds_qcow2:
        raise Invalid(
            f"disk.pool: new volumes need a directory pool (dir, fs or netfs); "
            f"'{disk.pool}' is {pool.type}",
            field="disk.pool",
        )
    free_gib = pool.available / volumes.GIB
    if disk.size_gib * volumes.GIB > pool.available:
        raise Invalid(
            f"disk.size_gib: {disk.size_gib} GiB does not fit in pool '{disk.pool}' "
            f"({free_gib:.1f} GiB free)",
            field="disk.size_gib",
        )
    if volumes.volume_exists(conn, disk.pool, volume_name):
        raise Conflict(
            f"name: pool '{disk.pool}' already has a volume '{volume_name}'", field="name"
        )


def _check_network(conn: HostConnection, name: str, *, start: bool) -> None:
    try:
        network = networks.get_network(conn, name)
    except NotFound as exc:
        raise Invalid(f"network: no network '{name}' on this host", field="network") from exc
    if start and not network.active:
        raise Invalid(
            f"network: network '{name}' is not active, so the guest could not start; "
            "start the network or create the guest without starting it",
            field="network",
        )


def _cpu(
    conn: HostConnection,
    request: CreateRequest,
    *,
    platform: build.Platform,
    known: CpuProbe | None,
) -> CpuConfig:
    """The guest's CPU: the probe's answer, or the mode asked for with the host's limits."""
    if request.cpu_mode is not None and request.cpu_mode not in platform.cpu_modes:
        raise Invalid(
            f"cpu_mode: this host offers {', '.join(platform.cpu_modes)}", field="cpu_mode"
        )
    if request.cpu_mode == "custom" and request.cpu_model not in platform.cpu_models:
        raise Invalid(
            f"cpu_model: '{request.cpu_model}' is not a CPU model this host can run",
            field="cpu_model",
        )
    found = cpu_probe(conn, platform, known=known)
    if request.cpu_mode is None:
        return found.config
    return CpuConfig(request.cpu_mode, request.cpu_model).with_host_limits(found.config.disabled)


def check_on_host(
    conn: HostConnection,
    request: CreateRequest,
    host_id: int,
    *,
    known_cpu: CpuProbe | None = None,
) -> CreatePlan:
    """Check the request against the host itself and plan the guest (runs on its connection).

    known_cpu is the CPU probe stored with the host, taken when still current."""
    if domains.name_taken(conn, request.name):
        raise Conflict(
            f"name: a guest called '{request.name}' already exists on this host", field="name"
        )
    platform = build.host_platform(conn)
    if platform.max_vcpus and request.vcpus > platform.max_vcpus:
        raise Invalid(
            f"vcpus: this host's hypervisor allows at most {platform.max_vcpus} per guest",
            field="vcpus",
        )
    if request.firmware not in platform.firmware:
        raise Invalid("firmware: this host offers no UEFI firmware", field="firmware")
    new_disk = request.disk if isinstance(request.disk, NewDisk) else None
    if new_disk is not None:
        _check_new_disk(conn, new_disk, volume_name(request.name))
    disk = request.disk if isinstance(request.disk, VolumeRef) else None
    if request.network is not None:
        _check_network(conn, request.network, start=request.start)
    guest = GuestPlan(
        uuid=str(uuid_lib.uuid4()),
        name=request.name,
        vcpus=request.vcpus,
        memory_mib=request.memory_mib,
        platform=platform,
        firmware=request.firmware,
        disk=_attachable(conn, disk, "disk") if disk is not None else None,
        cdrom=_attachable(conn, request.cdrom, "cdrom") if request.cdrom is not None else None,
        network=request.network,
        cpu=_cpu(conn, request, platform=platform, known=known_cpu),
    )
    return CreatePlan(host_id=host_id, guest=guest, new_disk=new_disk, start=request.start)


def plan_create(
    session: Session, sync: HostCalls, request: CreateRequest, principal: Principal
) -> CreatePlan:
    """Check everything, first here and then on the host; refusals name the field at fault."""
    host = check_request(session, request, principal)
    known_cpu = from_record(host.cpu_probe)
    try:
        return sync.call(
            host.id, lambda conn: check_on_host(conn, request, host.id, known_cpu=known_cpu)
        )
    except HostUnreachable as exc:
        raise HostUnreachable(f"host_id: {host.name}: {exc.message}", field="host_id") from exc


def _quiet(_progress: float, _message: str) -> None:
    """Progress nobody follows."""


def _take_back(undo: list[tuple[str, Callable[[], object]]], error: Exception) -> None:
    """Run the undo steps, newest first; the error says what could not be taken back."""
    failed = []
    for what, step in reversed(undo):
        try:
            step()
        except VirtdeckError as exc:
            log.error("could not take back %s after a failed create: %s", what, exc.message)
            failed.append(f"{what} ({exc.message})")
    if failed and isinstance(error, VirtdeckError):
        error.message = f"{error.message}; could not remove {', '.join(failed)}"


def build_guest(conn: HostConnection, plan: CreatePlan, *, report: Reporter = _quiet) -> GuestInfo:
    """Make the volume, define the guest and start it; a failure takes back what was made."""
    guest = plan.guest
    undo: list[tuple[str, Callable[[], object]]] = []
    try:
        if plan.new_disk is not None:
            pool, size = plan.new_disk.pool, plan.new_disk.size_gib
            report(0.1, f"making a {size} GiB volume in pool {pool}")
            volume = volumes.create_volume(
                conn, pool, plan.volume_name, capacity=size * volumes.GIB
            )
            undo.append(
                (f"volume {volume.path}", lambda: volumes.delete_volume(conn, pool, volume.name))
            )
            guest = replace(guest, disk=DiskSource(path=volume.path, kind=volume.kind))
        report(0.6, "defining the guest")
        build.define_guest(conn, guest)
        undo.append((f"guest {guest.name}", lambda: teardown.delete_guest(
            conn, guest.uuid, remove_storage=False, force=True
        )))  # fmt: skip
        if plan.start:
            report(0.8, "starting the guest")
            conn.act(guest.uuid, "start")
        return conn.guest(guest.uuid)
    except Exception as exc:
        _take_back(undo, exc)
        raise


def _job_work(
    plan: CreatePlan, *, sync: HostCalls, sessions: sessionmaker[Session]
) -> Callable[[Reporter], dict[str, Any]]:
    """The work of a create job: build on the host, then write the guest into the inventory."""

    def work(report: Reporter) -> dict[str, Any]:
        info = sync.call(
            plan.host_id, lambda conn: build_guest(conn, plan, report=report), timeout=JOB_TIMEOUT
        )
        with transaction(sessions) as session:
            record_guest(session, plan.host_id, info)
        return {"guest_uuid": plan.guest.uuid}

    return work


def create_guest(
    session: Session,
    *,
    request: CreateRequest,
    principal: Principal,
    sync: HostCalls,
    jobs: JobQueue,
    sessions: sessionmaker[Session],
) -> Created:
    """Create a guest now, or as a job when a new volume must be allocated; commits."""
    plan = plan_create(session, sync, request, principal)
    if plan.new_disk is None:
        info = sync.call(plan.host_id, lambda conn: build_guest(conn, plan))
        record_guest(session, plan.host_id, info)
        session.commit()
        return Created(guest=get_guest(session, plan.guest.uuid))
    job = job_service.create_job(
        session,
        kind=job_service.JobKind.GUEST_CREATE,
        host_id=plan.host_id,
        guest_uuid=plan.guest.uuid,
        created_by=principal.username,
    )
    session.commit()  # the row exists before the work begins
    jobs.submit(job.id, _job_work(plan, sync=sync, sessions=sessions))
    return Created(job=job)
