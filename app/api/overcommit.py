"""/api/v1 overcommit: per-host CPU and memory allocation, samples, and the policy."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.deps import SessionDep, guard
from app.models.audit import audit_target
from app.services import overcommit as overcommit_service
from app.services.auth import Permission
from app.services.overcommit import HostOvercommit, Sample

router = APIRouter(tags=["overcommit"])


class FleetOvercommit(BaseModel):
    """Every host's overcommit picture and the totals over them."""

    hosts: list[HostOvercommit]
    totals: dict[str, Any]


class Policy(BaseModel):
    """The global allowed allocation ratios (vCPUs per CPU, guest memory per host memory)."""

    cpu: float = Field(examples=[4.0])
    memory: float = Field(examples=[1.0])
    memory_presets: tuple[float, ...] = overcommit_service.MEMORY_PRESETS


class HostPolicy(BaseModel):
    """A host's own ratios; null falls back to the global policy."""

    cpu: float | None = None
    memory: float | None = None


@router.get(
    "/hosts/{host_id:id}/overcommit",
    response_model=HostOvercommit,
    dependencies=guard(Permission.VIEW),
)
def host_overcommit(host_id: int, session: SessionDep) -> HostOvercommit:
    """One host's CPU and memory allocation against its capacity and policy."""
    return overcommit_service.host_overcommit(session, host_id)


@router.get(
    "/hosts/{host_id:id}/overcommit/samples",
    response_model=list[Sample],
    dependencies=guard(Permission.VIEW),
)
def host_samples(
    host_id: int,
    session: SessionDep,
    hours: Annotated[float, Query(gt=0, le=25, description="how far back")] = 24,
) -> list[Sample]:
    """The host's running allocation ratios, sampled at most once a minute, oldest first."""
    return overcommit_service.samples(session, host_id, hours=hours)


@router.get("/overcommit", response_model=FleetOvercommit, dependencies=guard(Permission.VIEW))
def fleet_overcommit(session: SessionDep) -> FleetOvercommit:
    """Every host's overcommit picture, with fleet totals."""
    items = overcommit_service.all_overcommit(session)
    return FleetOvercommit(hosts=items, totals=overcommit_service.fleet_totals(items))


def _policy(session: SessionDep) -> Policy:
    cpu, memory = overcommit_service.get_policy(session)
    return Policy(cpu=cpu, memory=memory)


@router.get("/policy", response_model=Policy, dependencies=guard(Permission.VIEW))
def get_policy(session: SessionDep) -> Policy:
    """The global overcommit policy and the memory presets."""
    return _policy(session)


@router.put("/policy", response_model=Policy, dependencies=guard(Permission.ADMIN, "policy.update"))
def put_policy(request: Request, body: HostPolicy, session: SessionDep) -> Policy:
    """Set the global policy; both ratios from 0.1 to 100."""
    request.state.audit_target = audit_target(
        "policy", "global", f"cpu {body.cpu}, memory {body.memory}"
    )
    overcommit_service.set_policy(session, cpu=body.cpu, memory=body.memory)
    session.commit()
    return _policy(session)


@router.put(
    "/hosts/{host_id:id}/policy",
    response_model=HostOvercommit,
    dependencies=guard(Permission.ADMIN, "policy.update"),
)
def put_host_policy(
    request: Request, host_id: int, body: HostPolicy, session: SessionDep
) -> HostOvercommit:
    """Set or (with null) clear a host's own ratios; answers with its overcommit picture."""
    request.state.audit_target = audit_target(
        "policy", f"host:{host_id}", f"cpu {body.cpu}, memory {body.memory}"
    )
    overcommit_service.set_host_policy(session, host_id, cpu=body.cpu, memory=body.memory)
    session.commit()
    return overcommit_service.host_overcommit(session, host_id)
