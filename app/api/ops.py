"""/healthz and /readyz for load balancers and orchestrators."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import SessionDep, guard
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
