"""The Jinja environment and the filters the templates use."""

from datetime import datetime, timedelta
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from app.errors import VirtdeckError
from app.models.audit import parse_targets
from app.models.base import utcnow
from app.services.auth import Permission
from app.services.backups import backup_actions, status_actions
from app.services.backups.digests import shown as file_digest
from app.services.console_links import screen_route
from app.services.consoles import is_live
from app.services.guest_actions import ACTION_LABELS, allowed_actions
from app.services.guest_failures import shutdown_unanswered
from app.services.guests import known_addresses, status, uptime
from app.services.jobs import settling
from app.services.overcommit import ratio_text
from app.services.paging import MAX_OFFSET
from app.services.snapshots import revert_effect
from app.services.states import GuestState
from app.services.tag_rules import listed
from app.units import human_bytes
from app.web.charts import ratio_gauge, share_bar, sparkline
from app.web.htmx import PAGE_SIZE

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"


def _principal(request: Request) -> dict:
    """Every template sees who is logged in as `me` (None before authentication)."""
    return {"me": getattr(request.state, "principal", None)}


templates = Jinja2Templates(directory=TEMPLATES, context_processors=[_principal])
# Templates ship with the code: a server renders those it started with. Checking each one's
# file for changes cost a stat per include, and the Guests page includes a row's three
# templates a hundred times (8 % of its time at 25,000 guests).
templates.env.auto_reload = False


def kib(value: int | None) -> str:
    """KiB as a short human size."""
    return "—" if value is None else human_bytes(value * 1024)


def ago(value: datetime | None) -> str:
    """A time as 'N s/min/h/d ago'."""
    if value is None:
        return "never"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def coarse_duration(value: timedelta | None) -> str:
    """A span in its two largest units, to the minute ("3 h 12 min", "2 d 4 h", "< 1 min"), or
    a dash: the times it comes from are as exact as a sync, not to the second."""
    if value is None:
        return "—"
    minutes = int(value.total_seconds()) // 60
    if minutes < 1:
        return "< 1 min"
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [(days, "d"), (hours, "h"), (minutes, "min")]
    first = next(i for i, (count, _unit) in enumerate(parts) if count)
    return " ".join(f"{count} {unit}" for count, unit in parts[first : first + 2] if count)


def badge(value: object) -> Markup:
    """A state as a coloured badge; a guest state brings its own CSS slug ("shutting-down").
    A function, not a macro: a macro imported by a template included per table row (the host
    page's guests) was built again for each row."""
    css = getattr(value, "css", value)
    text = getattr(value, "label", value)
    return Markup(f'<span class="badge badge-{escape(css)}">{escape(text)}</span>')


def utc(value: datetime | None) -> str:
    """A time as 'YYYY-MM-DD HH:MM:SS' (UTC), or a dash."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


templates.env.globals["Permission"] = Permission
templates.env.globals["console_live"] = is_live
templates.env.globals["screen_route"] = screen_route
templates.env.globals["badge"] = badge
templates.env.globals["guest_status"] = status
templates.env.globals["guest_uptime"] = uptime
templates.env.globals["guest_addresses"] = known_addresses
templates.env.globals["state_of"] = GuestState.of
templates.env.globals["guest_actions"] = allowed_actions
templates.env.globals["shutdown_unanswered"] = shutdown_unanswered
templates.env.globals["ACTION_LABELS"] = ACTION_LABELS
templates.env.globals["backup_actions"] = backup_actions
templates.env.globals["backup_status_actions"] = status_actions
templates.env.globals["file_digest"] = file_digest
templates.env.globals["job_settling"] = settling
templates.env.globals["revert_effect"] = revert_effect
templates.env.globals["utcnow"] = utcnow
templates.env.filters["kib"] = kib
templates.env.filters["ago"] = ago
templates.env.filters["coarse_duration"] = coarse_duration
templates.env.filters["utc"] = utc
templates.env.filters["ratio"] = ratio_text
templates.env.filters["bytes"] = human_bytes
templates.env.filters["tags"] = listed
templates.env.filters["targets"] = parse_targets
templates.env.globals["ratio_gauge"] = ratio_gauge
templates.env.globals["share_bar"] = share_bar
templates.env.globals["sparkline"] = sparkline


def page_window(page: int) -> tuple[int, int]:
    """The page number kept within range, and its offset for PAGE_SIZE rows a page."""
    page = min(max(page, 1), MAX_OFFSET // PAGE_SIZE)
    return page, (page - 1) * PAGE_SIZE


def form_refused(
    request: Request, template: str, exc: VirtdeckError, *, form: dict, **context
) -> Response:
    """The form again with the typed values and the reason next to its field (each field's,
    when the error carries several: app.errors.check_all); audited."""
    request.state.audit_error = exc.message
    form = {**form, "errors": exc.extra.get("errors") or {exc.field: exc.message}}
    return templates.TemplateResponse(
        request, template, {**context, "form": form}, status_code=exc.status_code
    )
