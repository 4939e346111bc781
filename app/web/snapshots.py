"""The guest page's Snapshots panel: take, revert and delete, each answering with the panel."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from app.deps import SessionsDep, SyncDep, guard, needs
from app.errors import Invalid
from app.services import guests as guest_service
from app.services import snapshots as snapshot_service
from app.services.auth import Permission, Principal
from app.web.htmx import is_htmx, navigate, toast_headers
from app.web.templating import form_refused, templates

router = APIRouter()
PANEL = "partials/guest_snapshots.html"
MEMORY_CHOICES = {"auto": None, "yes": True, "no": False}


def panel_context(session: Session, uuid: str) -> dict:
    """What the panel shows: the guest, its host and its snapshot tree."""
    guest = guest_service.get_guest(session, uuid)
    tree = snapshot_service.snapshot_tree(session, guest.id)
    return {"guest": guest, "host": guest.host, "snapshots": tree, "form": {}}


def _panel(request: Request, sessions: sessionmaker[Session], uuid: str, toast: str) -> Response:
    """The panel as it is now, with a toast."""
    with sessions() as session:
        context = panel_context(session, uuid)
    response = templates.TemplateResponse(request, PANEL, context)
    response.headers.update(toast_headers(toast))
    return response


def _memory(choice: str) -> bool | None:
    """The form's memory choice, or 422 on the field `memory`."""
    if choice not in MEMORY_CHOICES:
        raise Invalid(f"memory: one of {', '.join(MEMORY_CHOICES)}", field="memory")
    return MEMORY_CHOICES[choice]


@router.post(
    "/guests/{uuid:guest}/snapshots", dependencies=guard(Permission.OPERATE, "snapshot.create")
)
def create_snapshot(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    memory: Annotated[str, Form()] = "auto",
) -> Response:
    """Take a snapshot; a refused name, description or memory choice shows the form again."""
    try:
        snapshot_service.create_snapshot(
            sessions, sync, uuid=uuid, name=name.strip(), description=description,
            memory=_memory(memory),
        )  # fmt: skip
    except Invalid as exc:
        with sessions() as session:
            context = panel_context(session, uuid)
        form = {"name": name, "description": description, "memory": memory}
        return form_refused(request, PANEL, exc, **{**context, "form": form})
    return _panel(request, sessions, uuid, f"snapshot {name.strip()} taken")


@router.post(
    "/guests/{uuid:guest}/snapshots/{name:snapshot}/revert",
)
def revert_snapshot(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    name: str,
    principal: Annotated[Principal, needs(Permission.OPERATE, "snapshot.revert")],
    force: bool = False,
) -> Response:
    """Revert the guest to the snapshot (force: admins start it over the policy); the page
    is shown anew (its state may have changed), with a toast that says so when it did."""
    with sessions() as session:
        before = guest_service.get_guest(session, uuid)
        was = guest_service.status(before, before.host)
    guest = snapshot_service.revert_snapshot(
        sessions, sync, uuid=uuid, name=name, principal=principal, force=force
    )
    with sessions() as session:
        after = guest_service.get_guest(session, uuid)
        now = guest_service.status(after, after.host)
    toast = f"{guest.name} reverted to {name}"
    if now != was:
        toast += f": it was {was.label} and is now {now.label}"
    if is_htmx(request):
        return navigate(request, f"/guests/{uuid}?section=snapshots", toast=toast)
    return _panel(request, sessions, uuid, toast)


@router.post(
    "/guests/{uuid:guest}/snapshots/{name:snapshot}/delete",
    dependencies=guard(Permission.OPERATE, "snapshot.delete"),
)
def delete_snapshot(
    request: Request, sessions: SessionsDep, sync: SyncDep, uuid: str, name: str
) -> Response:
    """Delete the snapshot; answers with the panel."""
    snapshot_service.delete_snapshot(sessions, sync, uuid=uuid, name=name)
    return _panel(request, sessions, uuid, f"snapshot {name} deleted")
