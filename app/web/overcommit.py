"""The overcommit page of a host, and editing the overcommit policy."""

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import SessionDep, guard
from app.errors import VirtdeckError
from app.models.audit import audit_target
from app.models.base import utcnow
from app.services import hosts as host_service
from app.services import overcommit as overcommit_service
from app.services.auth import Permission
from app.services.overcommit import HostOvercommit
from app.web.charts import BarChart, bar_chart, line_chart
from app.web.templating import (
    PAGE_SIZE,
    form_refused,
    kib,
    page_window,
    ratio,
    redirect,
    templates,
    wants_fragment,
)

router = APIRouter()
HISTORY_HOURS = 24
POLICY_FIELDS = frozenset({"cpu", "memory"})
Sort = Literal["name", "vcpus", "memory"]
SORT_KEYS = {
    "name": lambda g: g.name,
    "vcpus": lambda g: (-g.vcpus, g.name),
    "memory": lambda g: (-g.memory_max_kib, -g.memory_current_kib, g.name),
}


def guest_rows(view: HostOvercommit, sort: str, page: int) -> dict:
    """One page of the contributions table: guests by name, or the largest first by vCPUs or by
    memory (max, then current); PAGE_SIZE a page, as on the host page."""
    guests = sorted(view.guests, key=SORT_KEYS[sort])
    pages = max(1, -(-len(guests) // PAGE_SIZE))
    page, offset = page_window(min(page, pages))
    return {
        "sort": sort,
        "guests": guests[offset : offset + PAGE_SIZE],
        "page": page,
        "pages": pages,
    }


def cpu_chart(view: HostOvercommit) -> BarChart:
    """vCPUs running and defined against the physical CPUs, with the policy's limit."""
    limit = view.cpus * view.policy_cpu if view.cpus else None
    return bar_chart(
        [
            ("running", view.vcpus_running, f"{view.vcpus_running} vCPUs",
             f"alloc-{view.cpu_running.state}"),
            ("defined", view.vcpus_defined, f"{view.vcpus_defined} vCPUs", "defined"),
            ("physical", view.cpus, f"{view.cpus or '?'} CPUs", "capacity"),
        ],
        [("", view.cpus, "capacity"), (f"policy {ratio(view.policy_cpu)}", limit, "policy")],
    )  # fmt: skip


def memory_chart(view: HostOvercommit) -> BarChart:
    """Guest memory (running max, current, RSS, defined) against physical, with the policy."""
    physical = view.memory_kib
    limit = physical * view.policy_memory if physical else None
    rss = view.rss_kib
    return bar_chart(
        [
            ("running, max", view.memory_running_max_kib, kib(view.memory_running_max_kib),
             f"alloc-{view.memory_running.state}"),
            ("current", view.memory_running_current_kib, kib(view.memory_running_current_kib),
             "current"),
            ("RSS used", rss, kib(rss) if rss is not None else "unknown", "used"),
            ("defined", view.memory_defined_kib, kib(view.memory_defined_kib), "defined"),
            ("physical", physical, kib(physical), "capacity"),
        ],
        [("", physical, "capacity"), (f"policy {ratio(view.policy_memory)}", limit, "policy")],
    )  # fmt: skip


def page_context(session: Session, view: HostOvercommit, sort: str, page: int) -> dict:
    """Everything the overcommit page and its fragments show."""
    history = overcommit_service.samples(session, view.host_id, hours=HISTORY_HOURS)
    chart = line_chart(
        history,
        now=utcnow(),
        hours=HISTORY_HOURS,
        policies=(view.policy_cpu, view.policy_memory),
    )
    return {
        **guest_rows(view, sort, page),
        "cpu_chart": cpu_chart(view),
        "memory_chart": memory_chart(view),
        "history": chart,
        "history_count": len(history),
        "swap_unknown": overcommit_service.SWAP_UNKNOWN,
        **policy_context(session, view),
    }


def policy_context(session: Session, view: HostOvercommit) -> dict:
    """What the policy panel shows: the policy in force, the global one, the host's own."""
    host = host_service.get_host(session, view.host_id)
    return {
        "view": view,
        "own_policy": (host.policy_cpu, host.policy_memory),
        "global_policy": overcommit_service.get_policy(session),
        "memory_presets": overcommit_service.MEMORY_PRESETS,
        "near": overcommit_service.NEAR,
        "form": {},
    }


@router.get(
    "/hosts/{host_id:id}/overcommit",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def overcommit_page(
    request: Request, session: SessionDep, host_id: int, sort: Sort = "vcpus", page: int = 1
) -> HTMLResponse:
    """A host's CPU and memory allocation against capacity and policy; fragments for htmx."""
    view = overcommit_service.host_overcommit(session, host_id)
    if wants_fragment(request, "guest-loads"):
        context = {"view": view, **guest_rows(view, sort, page)}
        return templates.TemplateResponse(request, "partials/overcommit_guests.html", context)
    context = page_context(session, view, sort, page)
    if wants_fragment(request, "overcommit-live"):
        return templates.TemplateResponse(request, "partials/overcommit_live.html", context)
    return templates.TemplateResponse(request, "overcommit.html", context)


def policy_refused(
    request: Request, session: Session, host_id: int | None, exc: VirtdeckError, *, form: dict
) -> Response:
    """The policy panel again with the typed values and the reason next to the field."""
    session.rollback()
    if host_id is None:
        raise exc
    context = policy_context(session, overcommit_service.host_overcommit(session, host_id))
    del context["form"]
    return form_refused(request, "partials/overcommit_policy.html", exc, form=form, **context)


@router.post(
    "/overcommit/policy",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "policy.update"),
)
def update_policy(
    request: Request,
    session: SessionDep,
    host_id: Annotated[int | None, Form()] = None,
    cpu: Annotated[str, Form(max_length=32)] = "",
    memory: Annotated[str, Form(max_length=32)] = "",
    memory_preset: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Set the global ratios; a memory preset button stands in for the typed memory ratio."""
    memory = memory_preset or memory
    try:
        overcommit_service.set_policy(session, cpu=cpu, memory=memory)
    except VirtdeckError as exc:
        if exc.field not in POLICY_FIELDS:
            raise
        form = {"scope": "global", "cpu": cpu, "memory": memory}
        return policy_refused(request, session, host_id, exc, form=form)
    request.state.audit_target = audit_target("policy", "global", f"cpu {cpu}, memory {memory}")
    session.commit()
    return redirect(request, f"/hosts/{host_id}/overcommit" if host_id else "/")


@router.post(
    "/hosts/{host_id:id}/overcommit/policy",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "policy.update"),
)
def update_host_policy(
    request: Request,
    session: SessionDep,
    host_id: int,
    cpu: Annotated[str, Form(max_length=32)] = "",
    memory: Annotated[str, Form(max_length=32)] = "",
    clear: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Set this host's own ratios (an empty field follows the global one), or clear both."""
    own_cpu = None if clear or not cpu.strip() else cpu
    own_memory = None if clear or not memory.strip() else memory
    try:
        overcommit_service.set_host_policy(session, host_id, cpu=own_cpu, memory=own_memory)
    except VirtdeckError as exc:
        if exc.field not in POLICY_FIELDS:
            raise
        form = {"scope": "host", "cpu": cpu, "memory": memory}
        return policy_refused(request, session, host_id, exc, form=form)
    request.state.audit_target = audit_target(
        "policy", f"host:{host_id}", f"cpu {own_cpu}, memory {own_memory}"
    )
    session.commit()
    return redirect(request, f"/hosts/{host_id}/overcommit")
