"""A job's own page and progress fragment, and its cancel button."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.db import transaction
from app.deps import SessionDep, SessionsDep, guard
from app.services import jobs as job_service
from app.services.auth import Permission
from app.web.htmx import is_htmx, redirect, toast_headers
from app.web.templating import templates

router = APIRouter()


@router.get("/jobs/{job_id:id}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def job_progress(
    request: Request, session: SessionDep, job_id: int, wizard: bool = False
) -> Response:
    """A job's progress; the polling fragment goes to the guest once a create succeeded (in the
    create wizard, the form's Create button comes back once it failed)."""
    job = job_service.get_job(session, job_id)
    made = (job.result or {}).get("guest_uuid") if job.status == "succeeded" else None
    if is_htmx(request):
        if made:
            return redirect(request, f"/guests/{made}")
        context = {"job": job, "refreshed": True, "wizard": wizard}
        return templates.TemplateResponse(request, "partials/job_progress.html", context)
    return templates.TemplateResponse(request, "job.html", {"job": job})


@router.post(
    "/jobs/{job_id:id}/cancel",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "job.cancel"),
)
def cancel_job(sessions: SessionsDep, job_id: int) -> Response:
    """Ask a backup or restore to stop; its bar shows the outcome on its next poll."""
    with transaction(sessions) as session:
        kind = job_service.request_cancel(session, job_id).kind
    return Response(status_code=204, headers=toast_headers(f"cancelling the {kind}"))
