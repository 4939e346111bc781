"""The guest page's Usage panel: what the guest uses now (CPU, memory, disk and network), and a
chart of its CPU and memory over the last day or 30 days, from the worker's samples; its
Addresses panel, asked of its host when the page loads; and the host page's chart of what its
guests use together."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.config import Settings
from app.deps import SessionDep, SettingsDep, SyncDep, guard
from app.errors import VirtdeckError
from app.models.base import utcnow
from app.services import addresses as address_service
from app.services import guests as guest_service
from app.services import usage as usage_service
from app.services.auth import Permission
from app.web.charts import LineChart, line_chart
from app.web.templating import templates

router = APIRouter()


def _chart(
    samples: list,
    *,
    period: str,
    now: datetime,
    settings: Settings,
    memory: Callable[[Any], float | None],
) -> LineChart:
    """CPU and memory in use (memory(sample): a percentage) over the period's span, the lines
    broken where samples are missing."""
    span = usage_service.PERIODS[period][1]
    gap = usage_service.gap(period, settings.usage_interval)
    return line_chart(
        samples, now=now, hours=round(span.total_seconds() / 3600), percent=True, gap=gap,
        series=[("CPU", "cpu", lambda s: s.cpu_percent), ("memory", "memory", memory)],
    )  # fmt: skip


@router.get(
    "/guests/{uuid:guest}/usage", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def usage_panel(
    request: Request, session: SessionDep, settings: SettingsDep, uuid: str, period: str = "day"
) -> HTMLResponse:
    """The panel for a period: day (each reading) or month (each hour)."""
    guest = guest_service.get_guest(session, uuid)
    now = utcnow()
    samples = usage_service.history(session, uuid, period=period, now=now)
    maximum = guest.memory_max_kib or 1

    def memory_share(sample) -> float | None:
        used = sample.memory_used_kib
        return None if used is None else min(100.0, 100 * used / maximum)

    chart = _chart(samples, period=period, now=now, settings=settings, memory=memory_share)
    context = {"guest": guest, "chart": chart, "period": period, "count": len(samples)}
    return templates.TemplateResponse(request, "partials/guest_usage.html", context)


@router.get(
    "/hosts/{host_id:id}/usage", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def host_usage_panel(
    request: Request, session: SessionDep, settings: SettingsDep, host_id: int, period: str = "day"
) -> HTMLResponse:
    """The host's guests' CPU and memory in use together, over a period (day or month)."""
    now = utcnow()
    samples = usage_service.host_history(session, host_id, period=period, now=now)
    chart = _chart(
        samples, period=period, now=now, settings=settings, memory=lambda s: s.memory_percent
    )
    context = {"host_id": host_id, "chart": chart, "period": period, "count": len(samples)}
    return templates.TemplateResponse(request, "partials/host_usage.html", context)


@router.get(
    "/guests/{uuid:guest}/addresses",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def addresses_panel(
    request: Request, session: SessionDep, sync: SyncDep, uuid: str
) -> HTMLResponse:
    """The guest's IP addresses and their sources, or why they cannot be asked now."""
    guest = guest_service.get_guest(session, uuid)
    context = {"guest": guest, "addresses": [], "unavailable": None}
    try:
        context["addresses"] = address_service.addresses(session, sync, uuid)
    except VirtdeckError as exc:
        context["unavailable"] = exc.message
    return templates.TemplateResponse(request, "partials/guest_addresses.html", context)
