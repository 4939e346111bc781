"""Backups in the browser: the guest page's panel, the list, one backup's page with its restore
form, and the progress of their jobs (a bar that polls itself, then re-renders its section).

(About 350 lines: the three views share the panel, chain and job-progress helpers.)
"""

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.deps import (
    JobsDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    SyncDep,
    guard,
    needs,
    parse_row_id,
)
from app.errors import Invalid, NotFound, VirtdeckError
from app.models import Backup, Job
from app.models.backup import BACKUP_STATES
from app.services import backups as backup_service
from app.services import guests as guest_service
from app.services import host_storage
from app.services import hosts as host_service
from app.services import jobs as job_service
from app.services.auth import Permission, Principal
from app.services.backups.chains import chains
from app.web.htmx import (
    PAGE_SIZE,
    is_htmx,
    navigate,
    page_count,
    redirect,
    retarget,
    wants_fragment,
    with_toast,
)
from app.web.templating import page_window, templates

router = APIRouter()
PANEL = "partials/guest_backups.html"
DETAILS = "partials/backup_details.html"
RESTORE = "partials/backup_restore.html"
RESTORE_POOLS = "partials/restore_pools.html"
TABLE = "partials/backup_table.html"
PROGRESS = "partials/backup_job.html"
GUEST_LIMIT = 10  # backups the guest page lists; /backups has them all
NEW_GUEST_FIELDS = ("name", "host_id", "pool")


def _running_job(session: Session, backups: list[Backup]) -> Job | None:
    """The queued or running job of a running backup among these, if any."""
    for backup in backups:
        if backup.status == "running" and backup.job_id is not None:
            job = session.get(Job, backup.job_id)
            if job is not None and job_service.settling(job):
                return job
    return None


def panel_context(
    session: Session, uuid: str, *, finished: Job | None = None, error: str | None = None
) -> dict:
    """What the guest page's panel shows: the newest backups, a running one's job, and the
    job that just ended or the reason a backup was refused."""
    guest = guest_service.get_guest(session, uuid)
    rows, total = backup_service.list_backups(session, guest_uuid=guest.uuid, limit=GUEST_LIMIT)
    job = _running_job(session, rows)
    return {"guest": guest, "backups": rows, "chains": chains(session, rows), "total": total,
            "job": job, "finished": None if job else finished, "error": error}  # fmt: skip


def _panel(request: Request, session: Session, uuid: str, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, PANEL, panel_context(session, uuid, **context))


def _outcome(what: str, job: Job) -> str:
    """One line for the toast: how the job ended."""
    if job.status == "failed":
        return f"{what} failed: {job.error}"
    return f"{what} {job.status}"


# --- the guest page's panel -------------------------------------------------------------------


@router.get(
    "/guests/{uuid:guest}/backups", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def backups_panel(request: Request, session: SessionDep, uuid: str) -> Response:
    """The panel (the guest page loads it); a plain GET goes to the list of its backups."""
    if not is_htmx(request):
        return RedirectResponse(f"/backups?{urlencode({'guest': uuid})}", status_code=303)
    return _panel(request, session, uuid)


@router.post("/guests/{uuid:guest}/backups", response_class=HTMLResponse)
def start_backup(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    uuid: str,
    principal: Annotated[Principal, needs(Permission.OPERATE, "backup.create")],
) -> Response:
    """Back the guest up now; the panel with its progress, or with the reason it cannot be."""
    try:
        started = backup_service.start_backup(
            sessions, sync, jobs, settings, uuid=uuid, principal=principal
        )
    except VirtdeckError as exc:
        if isinstance(exc, NotFound) or exc.denied:
            raise
        request.state.audit_error = exc.message
        with sessions() as session:
            context = panel_context(session, uuid, error=exc.message)
        return templates.TemplateResponse(request, PANEL, context, status_code=exc.status_code)
    with sessions() as session:
        response = _panel(request, session, uuid)
    return with_toast(response, f"backup of {started.backup.guest_name} started")


@router.get(
    "/guests/{uuid:guest}/backups/jobs/{job_id:id}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def guest_backup_progress(
    request: Request, session: SessionDep, uuid: str, job_id: int
) -> Response:
    """The running backup's bar; once the job has ended, the whole panel (and a toast)."""
    job = job_service.get_job(session, job_id)
    if job.kind != job_service.JobKind.BACKUP or job.guest_uuid != uuid.lower():
        raise NotFound(f"job {job_id} is not a backup of guest {uuid}")
    if job_service.settling(job):
        return templates.TemplateResponse(request, PROGRESS, {"job": job, "poll": request.url.path})
    response = _panel(request, session, uuid, finished=job)
    guest = guest_service.get_guest(session, uuid)
    return retarget(response, "#guest-backups", message=_outcome(f"backup of {guest.name}", job))


# --- the list ---------------------------------------------------------------------------------


def _filters(host: str, guest: str, status: str) -> tuple[dict, dict[str, str]]:
    """The list's filters for the service, and what is wrong with any of them by field."""
    query: dict = {"host_id": None, "guest": guest or None, "status": status or None}
    errors = {}
    if host:
        try:
            query["host_id"] = parse_row_id(host, field="host", what="a host")
        except Invalid as exc:
            errors["host"] = exc.message
    if status and status not in BACKUP_STATES:
        errors["status"] = f"status: one of {', '.join(BACKUP_STATES)}"
    return query, errors


@router.get("/backups", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def backups_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    host: str = "",
    guest: str = "",
    status: str = "",
    page: int = 1,
) -> HTMLResponse:
    """Every backup, newest first (full or incremental, its parent, its changed bytes and size
    on disk), filtered by host, guest and status, a page at a time."""
    page, offset = page_window(page)
    guest = guest.strip()
    query, errors = _filters(host, guest, status)
    rows, total = [], 0
    if not errors:
        rows, total = backup_service.list_backups(session, **query, limit=PAGE_SIZE, offset=offset)
    context = {
        "backups": rows,
        "chains": chains(session, rows),
        "on_disk": backup_service.size_on_disk(settings, rows),
        "total": total,
        "filters": {"host": host, "guest": guest, "status": status},
        "errors": errors,
        "hosts": host_service.list_hosts(session),
        "states": BACKUP_STATES,
        "page": page,
        "pages": page_count(total),
    }
    status_code = 422 if errors else 200
    if wants_fragment(request, "backup-table"):
        return templates.TemplateResponse(request, TABLE, context, status_code=status_code)
    return templates.TemplateResponse(request, "backups.html", context, status_code=status_code)


# --- one backup -------------------------------------------------------------------------------


def _page_context(session: Session, backup: Backup, **context) -> dict:
    """What the backup's page shows: its details and place in its chain, its running job, the
    restore form."""
    job = _running_job(session, [backup])
    hosts = host_service.list_hosts(session)
    form = {"mode": "new", "name": f"{backup.guest_name}-restored", "host_id": str(backup.host_id)}
    return {"backup": backup, "chain": chains(session, [backup])[backup.id], "job": job,
            "hosts": hosts, "form": form, "restore_job": None, **context}  # fmt: skip


@router.get(
    "/backups/{backup_id:id}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def backup_page(request: Request, session: SessionDep, backup_id: int) -> HTMLResponse:
    """One backup: details, files, error, and the restore form."""
    backup = backup_service.get_backup(session, backup_id)
    context = _page_context(session, backup)
    if wants_fragment(request, "backup-details"):
        return templates.TemplateResponse(request, DETAILS, context)
    return templates.TemplateResponse(request, "backup.html", context)


@router.get(
    "/backups/{backup_id:id}/jobs/{job_id:id}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def backup_job_progress(
    request: Request, session: SessionDep, backup_id: int, job_id: int
) -> Response:
    """The backup's or a restore's bar; once it has ended, its section of the page (and a
    toast). A plain GET shows the backup's page with the job."""
    backup = backup_service.get_backup(session, backup_id)
    job = job_service.get_job(session, job_id)
    restore = job.kind == job_service.JobKind.RESTORE and job.guest_uuid == backup.guest_uuid
    if not restore and not (job.kind == job_service.JobKind.BACKUP and job.id == backup.job_id):
        raise NotFound(f"job {job_id} is not about backup {backup_id}")
    context = _page_context(session, backup, restore_job=job if restore else None)
    if not is_htmx(request):
        return templates.TemplateResponse(request, "backup.html", context)
    if job_service.settling(job):
        return templates.TemplateResponse(request, PROGRESS, {"job": job, "poll": request.url.path})
    if restore:
        response = templates.TemplateResponse(request, RESTORE, context)
        return retarget(
            response, "#backup-restore", message=_outcome(f"restore of {backup.guest_name}", job)
        )
    response = templates.TemplateResponse(request, DETAILS, context)
    return retarget(
        response, "#backup-details", message=_outcome(f"backup of {backup.guest_name}", job)
    )


def _answer(request: Request, session: Session, backup_id: int, uuid: str, toast: str) -> Response:
    """The section the button was in, as it is now, with a toast; else the backup's page."""
    if wants_fragment(request, "guest-backups"):
        return with_toast(_panel(request, session, uuid), toast)
    if wants_fragment(request, "backup-details"):
        backup = backup_service.get_backup(session, backup_id)
        context = _page_context(session, backup)
        return with_toast(templates.TemplateResponse(request, DETAILS, context), toast)
    return redirect(request, f"/backups/{backup_id}")


@router.post(
    "/backups/{backup_id:id}/verify",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "backup.verify"),
)
def verify_backup(
    request: Request, sessions: SessionsDep, settings: SettingsDep, backup_id: int
) -> Response:
    """Recompute every checksum; the toast says whether the backup is intact, and whether it
    can be restored."""
    verified = backup_service.verify_backup(sessions, settings, backup_id)
    backup = verified.backup
    verdict = "intact" if backup.status == "succeeded" else f"{backup.status}: {backup.error}"
    if backup.status == "succeeded" and not verified.chain.restorable:
        verdict += f", but it cannot be restored: {verified.chain.blocker}"
    with sessions() as session:
        return _answer(request, session, backup_id, backup.guest_uuid,
                       f"backup {backup_id} of {backup.guest_name} is {verdict}")  # fmt: skip


@router.post(
    "/backups/{backup_id:id}/delete",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "backup.delete"),
)
def delete_backup(
    request: Request, sessions: SessionsDep, settings: SettingsDep, backup_id: int
) -> Response:
    """Remove the backup's files and record; from its own page, go to the list."""
    with sessions() as session:
        backup = backup_service.get_backup(session, backup_id)
    backup_service.delete_backup(sessions, settings, backup_id)
    toast = f"backup {backup_id} of {backup.guest_name} deleted"
    if wants_fragment(request, "guest-backups"):
        with sessions() as session:
            return with_toast(_panel(request, session, backup.guest_uuid), toast)
    return navigate(request, "/backups", toast=toast)


def _host_id(value: str) -> int | None:
    return parse_row_id(value, field="host_id", what="a host") if value.strip() else None


@router.get(
    "/backups/{backup_id:id}/restore/pools",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE),
)
def restore_pools(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    backup_id: int,
    host_id: str = "",
    pool: Annotated[str, Query(max_length=255)] = "",
    invalid: bool = False,
) -> Response:
    """The restore form's choice of pool: the chosen host's (else the backup's) pools that can
    take the disks, as they are now, or why they cannot be read; `pool` stays chosen (and
    marked invalid if the form refused it)."""
    backup = backup_service.get_backup(session, backup_id)
    chosen_host = _host_id(host_id) or backup.host_id
    pools, unavailable = host_storage.file_pools(session, sync, chosen_host)
    context = {
        "backup": backup, "pools": pools, "unavailable": unavailable, "chosen": pool,
        "errors": {"pool": "refused"} if invalid else {},
    }  # fmt: skip
    return templates.TemplateResponse(request, RESTORE_POOLS, context)


@router.post("/backups/{backup_id:id}/restore", response_class=HTMLResponse)
def restore_backup(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    backup_id: int,
    principal: Annotated[Principal, needs(Permission.OPERATE, "backup.restore")],
    mode: Annotated[str, Form()] = "new",
    name: Annotated[str, Form()] = "",
    host_id: Annotated[str, Form()] = "",
    pool: Annotated[str, Form()] = "",
) -> Response:
    """Start a restore: its progress in place of the form, or the form with the reason."""
    form = {"mode": mode, "name": name, "host_id": host_id, "pool": pool}
    try:
        restore = backup_service.RestoreRequest(
            mode=mode, name=name.strip() or None, host_id=_host_id(host_id),
            pool=pool.strip() or None,
        )  # fmt: skip
        started = backup_service.start_restore(
            sessions, sync, jobs, settings, backup_id=backup_id, request=restore,
            principal=principal,
        )  # fmt: skip
    except VirtdeckError as exc:
        if exc.denied or (isinstance(exc, NotFound) and exc.field is None):
            raise
        request.state.audit_error = exc.message
        shown = exc.field if mode == "new" and exc.field in NEW_GUEST_FIELDS else "restore"
        with sessions() as session:
            backup = backup_service.get_backup(session, backup_id)
            context = _page_context(session, backup)
        context["form"] = {**form, "errors": {shown: exc.message}}
        return templates.TemplateResponse(request, RESTORE, context, status_code=exc.status_code)
    with sessions() as session:
        backup = backup_service.get_backup(session, backup_id)
        context = _page_context(session, backup, restore_job=started.job)
    response = templates.TemplateResponse(request, RESTORE, context, status_code=202)
    response.headers["HX-Push-Url"] = f"/backups/{backup_id}/jobs/{started.job.id}"
    return with_toast(response, f"restore of {backup.guest_name} started")
