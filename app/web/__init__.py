"""HTMX pages: the same URL answers with a whole page or, for htmx, just the fragment."""

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

import app.paths  # noqa: F401  (registers the path types the routes name)
from app.errors import VirtdeckError
from app.services.auth import NotAuthenticated
from app.web import (
    accounts,
    audit,
    auth,
    backup_overview,
    backup_schedules,
    backups,
    consoles,
    guest_clone,
    guest_create,
    guest_delete,
    guest_edit,
    guest_hardware,
    guest_list,
    guest_usage,
    guests,
    host_storage,
    hosts,
    jobs,
    live,
    overcommit,
    snapshots,
    uploads,
)
from app.web.htmx import is_htmx
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(live.router)
# Before hosts: its pages sit under /hosts/{host_id}/.
router.include_router(overcommit.router)
router.include_router(hosts.router)
router.include_router(uploads.router)
router.include_router(host_storage.router)
# Before guests: /guests/new is not a guest's UUID.
router.include_router(guest_create.router)
router.include_router(guest_list.router)
router.include_router(guests.router)
router.include_router(guest_usage.router)
router.include_router(consoles.router)
router.include_router(guest_delete.router)
router.include_router(guest_edit.router)
router.include_router(guest_hardware.router)
router.include_router(guest_clone.router)
router.include_router(snapshots.router)
router.include_router(backup_overview.router)
router.include_router(backup_schedules.router)
router.include_router(backups.router)
router.include_router(jobs.router)
router.include_router(accounts.router)
router.include_router(audit.router)


def error_page(request: Request, exc: VirtdeckError, *, status_code: int | None = None) -> Response:
    """Login for the anonymous; else the error as a toast for htmx, or as a page of its own."""
    status_code = status_code or exc.status_code
    htmx = is_htmx(request)
    if isinstance(exc, NotAuthenticated):
        url = "/login?next=" + quote(request.url.path)
        if htmx:
            return Response(status_code=401, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)
    if htmx:
        response = templates.TemplateResponse(
            request, "partials/toast.html", {"message": exc.message, "kind": "error"},
            status_code=status_code, headers=exc.headers,
        )  # fmt: skip
        response.headers["HX-Retarget"] = "#toasts"
        response.headers["HX-Reswap"] = "beforeend"
        return response
    return templates.TemplateResponse(
        request, "error.html", {"message": exc.message, "status_code": status_code},
        status_code=status_code, headers=exc.headers,
    )  # fmt: skip
