"""/healthz and /readyz for load balancers and orchestrators, /metrics for Prometheus."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import SessionDep, guard
from app.services import metrics
from app.services.auth import Permission

router = APIRouter(tags=["operations"])


@router.get("/healthz", dependencies=guard(Permission.PUBLIC))
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=guard(Permission.PUBLIC))
def readyz(session: SessionDep) -> JSONResponse:
    """The database answers."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", dependencies=guard(Permission.VIEW), response_class=PlainTextResponse)
def get_metrics(request: Request, session: SessionDep) -> PlainTextResponse:
    """Prometheus text format (send an API token: Prometheus `authorization` credentials)."""
    state = request.app.state
    body = metrics.render(session, instance=state.instance, streams=state.live.subscribers)
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4")
