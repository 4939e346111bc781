"""The HTMX idioms of the pages in one place: is this an htmx request, which fragment it wants,
go elsewhere (with a toast), show a toast, retarget an answer, and how many pages a list has."""

import json

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

PAGE_SIZE = 100


def is_htmx(request: Request) -> bool:
    """Whether htmx sent the request (else it is a plain page load or form post)."""
    return request.headers.get("HX-Request") == "true"


def wants_fragment(request: Request, target: str) -> bool:
    """Whether htmx asks for just the element with this id."""
    return request.headers.get("HX-Target") == target


def toast_headers(message: str) -> dict[str, str]:
    """Response headers that make app.js show a toast (the `toast` event of HX-Trigger)."""
    return {"HX-Trigger": json.dumps({"toast": {"message": message}})}


def with_toast(response: Response, message: str) -> Response:
    """The response, with a toast."""
    response.headers.update(toast_headers(message))
    return response


def retarget(response: Response, target: str, *, message: str) -> Response:
    """The response swapped in place of the element matching target, with a toast."""
    response.headers.update({"HX-Retarget": target, "HX-Reswap": "outerHTML"})
    return with_toast(response, message)


def redirect(request: Request, url: str) -> Response:
    """Go to url: HX-Redirect for htmx, 303 See Other for a plain form."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def navigate(request: Request, url: str, *, toast: str) -> Response:
    """Go to url and show a toast there: htmx swaps the page's <main> in (so the toast
    survives), a plain form gets a redirect."""
    if not is_htmx(request):
        return RedirectResponse(url, status_code=303)
    location = {"path": url, "target": "main", "select": "main", "swap": "outerHTML"}
    return Response(
        status_code=204, headers={"HX-Location": json.dumps(location), **toast_headers(toast)}
    )


def page_count(total: int) -> int:
    """How many pages of PAGE_SIZE rows a list of total rows takes (at least one)."""
    return max(1, -(-total // PAGE_SIZE))
