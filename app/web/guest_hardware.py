"""The Edit section's hardware part: the guest's disks (pool, format, size, use), CD-ROM drives
and NICs read from its host, with forms to add, grow and detach disks, change or eject media,
and attach or detach NICs, through the same service as the API."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, SessionsDep, SyncDep, guard
from app.errors import Invalid, VirtdeckError
from app.models import Guest
from app.models.audit import audit_target
from app.services import guest_hardware, host_storage
from app.services import guests as guest_service
from app.services.auth import Permission
from app.services.guest_create import VolumeRef, disk_choice
from app.web.htmx import with_toast
from app.web.templating import form_refused, templates

router = APIRouter()
TEMPLATE = "partials/guest_hardware.html"
templates.env.globals["nic_models"] = guest_hardware.NIC_MODELS
Text = Annotated[str, Form(max_length=1024)]


def _context(session, sync, guest: Guest) -> dict:
    """What the section shows: the guest's hardware, and what its host offers to add."""
    context: dict = {"guest": guest}
    try:
        context["hardware"] = guest_hardware.hardware(sync, guest)
        context["choices"] = host_storage.host_choices(session, sync, guest.host_id)
    except VirtdeckError as exc:
        context["unavailable"] = exc.message
    return context


def _section(request: Request, session, sync, guest: Guest) -> Response:
    """The section as the host has the guest now."""
    context = {**_context(session, sync, guest), "form": {}}
    return templates.TemplateResponse(request, TEMPLATE, context)


@router.get(
    "/guests/{uuid:guest}/hardware",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE),
)
def hardware_section(request: Request, session: SessionDep, sync: SyncDep, uuid: str) -> Response:
    """The hardware part of the Edit section, read from the host now."""
    return _section(request, session, sync, guest_service.get_guest(session, uuid))


def _done(
    request: Request,
    session,
    sync,
    uuid: str,
    change: Callable[[], guest_hardware.Changed],
    *,
    form: dict,
    words: Callable[[guest_hardware.Changed], str],
) -> Response:
    """Make the change and show the section again with a toast, or the refusal at its field."""
    try:
        changed = change()
    except VirtdeckError as exc:
        if exc.field is None or exc.status_code >= 500:
            raise
        guest = guest_service.get_guest(session, uuid)
        context = _context(session, sync, guest)
        return form_refused(request, TEMPLATE, exc, form=form, **context)
    session.expire_all()
    guest = guest_service.get_guest(session, uuid)
    request.state.audit_target = audit_target("guest", uuid, guest.name)
    where = "now and at next start" if changed.live else "at next start"
    if changed.pending:
        where = "from its config; the running guest has not let go of it yet"
    response = _section(request, session, sync, guest)
    return with_toast(response, f"{guest.name}: {words(changed)} ({where})")


@router.post(
    "/guests/{uuid:guest}/disks",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.disk.add"),
)
def add_disk(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    pool: Text = "",
    size_gib: Annotated[int | None, Form()] = None,
    volume: Text = "",
    format: Text = "raw",
) -> Response:
    """Add a new volume (pool and size) or an existing volume (pool/volume and its format)."""
    form = {"pool": pool, "size_gib": size_gib, "volume": volume, "format": format}

    def change() -> guest_hardware.Changed:
        if volume:  # "pool/volume" from the list of the host's volumes
            pool_name, _, volume_name = volume.partition("/")
            disk = disk_choice(pool_name, None, volume_name, format_=format)
        else:
            disk = disk_choice(pool, size_gib, None)
        return guest_hardware.add_disk(sessions, sync, uuid=uuid, disk=disk)

    return _done(request, session, sync, uuid, change, form=form,
                 words=lambda c: f"{c.volume} added as {c.target}")  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/disks/{target:word}/detach",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.disk.detach"),
)
def detach_disk(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    target: str,
) -> Response:  # fmt: skip
    """Detach a disk or drive; its volume is kept."""
    return _done(
        request, session, sync, uuid,
        lambda: guest_hardware.detach_disk(sessions, sync, uuid=uuid, target=target),
        form={}, words=lambda c: f"{c.target} detached (its volume is kept)",
    )  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/disks/{target:word}/grow",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.disk.grow"),
)
def grow_disk(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    target: str, size_gib: Annotated[int, Form()],
) -> Response:  # fmt: skip
    """Grow a disk to a larger size."""
    return _done(
        request, session, sync, uuid,
        lambda: guest_hardware.grow_disk(
            sessions, sync, uuid=uuid, target=target, size_gib=size_gib
        ),
        form={"grow_target": target, "size_gib": size_gib},
        words=lambda c: f"{c.target} grown to {size_gib} GiB",
    )  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/nics",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.nic.attach"),
)
def attach_nic(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    network: Text = "", bridge: Text = "", mac: Text = "", model: Text = "virtio",
) -> Response:  # fmt: skip
    """Attach a NIC on a network or a bridge."""
    form = {"network": network, "bridge": bridge, "mac": mac, "model": model}
    return _done(
        request, session, sync, uuid,
        lambda: guest_hardware.attach_nic(
            sessions, sync, uuid=uuid, network=network or None, bridge=bridge.strip() or None,
            mac=mac or None, model=model,
        ),
        form=form, words=lambda c: f"NIC {c.mac} attached",
    )  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/nics/{mac:label}/detach",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.nic.detach"),
)
def detach_nic(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    mac: str,
) -> Response:  # fmt: skip
    """Detach the NIC with this MAC."""
    return _done(
        request, session, sync, uuid,
        lambda: guest_hardware.detach_nic(sessions, sync, uuid=uuid, mac=mac),
        form={}, words=lambda c: f"NIC {c.mac} detached",
    )  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/media/{target:word}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.media.change"),
)
def change_media(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    target: str, iso: Text = "",
) -> Response:  # fmt: skip
    """Put an ISO volume ("pool/volume") into a CD-ROM drive."""

    def change() -> guest_hardware.Changed:
        pool, _, volume = iso.partition("/")
        if not volume:
            raise Invalid("cdrom.volume: choose an ISO image", field="cdrom.volume")
        cdrom = VolumeRef(pool, volume)
        return guest_hardware.change_media(sessions, sync, uuid=uuid, target=target, cdrom=cdrom)

    return _done(request, session, sync, uuid, change, form={"media_target": target, "iso": iso},
                 words=lambda c: f"{c.volume} in {c.target}")  # fmt: skip


@router.post(
    "/guests/{uuid:guest}/media/{target:word}/eject",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.media.eject"),
)
def eject_media(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str,
    target: str,
) -> Response:  # fmt: skip
    """Eject the image from a CD-ROM drive."""
    return _done(
        request, session, sync, uuid,
        lambda: guest_hardware.change_media(sessions, sync, uuid=uuid, target=target, cdrom=None),
        form={"media_target": target}, words=lambda c: f"{c.target} ejected",
    )  # fmt: skip
