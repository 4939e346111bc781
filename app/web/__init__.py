"""HTMX pages: the same URL answers with a whole page or, for htmx, just the fragment."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.web import guests, hosts
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
router.include_router(hosts.router)
router.include_router(guests.router)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """An error as a toast for htmx requests, or as a page of its own."""
    if request.headers.get("HX-Request"):
        response = templates.TemplateResponse(
            request,
            "partials/toast.html",
            {"message": message, "kind": "error"},
            status_code=status_code,
        )
        response.headers["HX-Retarget"] = "#toasts"
        response.headers["HX-Reswap"] = "beforeend"
        return response
    return templates.TemplateResponse(
        request,
        "error.html",
        {"message": message, "status_code": status_code},
        status_code=status_code,
    )
