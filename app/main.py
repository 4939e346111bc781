"""create_app(settings): routers, static files, error handlers and the sync workers."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from app import api, web
from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory, transaction
from app.errors import VirtdeckError
from app.services.hosts import ensure_default_host
from app.workers.sync import SyncManager

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{field}: {error['msg']}" if field else error["msg"])
    return "; ".join(parts)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The virtdeck application for these settings."""
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    sync = SyncManager(sessions=sessions, settings=settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.default_host_uri:
            with transaction(sessions) as session:
                ensure_default_host(
                    session, name=settings.default_host_name, uri=settings.default_host_uri
                )
        if settings.sync_enabled:
            sync.start()
        yield
        sync.stop()
        engine.dispose()

    app = FastAPI(title="virtdeck", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.sync = sync

    @app.exception_handler(VirtdeckError)
    async def virtdeck_error(request: Request, exc: VirtdeckError) -> Response:
        if _wants_json(request):
            body = {"detail": exc.message, "field": exc.field}
            return JSONResponse(body, status_code=exc.status_code)
        return web.error_page(request, exc.status_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message = _validation_message(exc)
        if _wants_json(request):
            body = {"detail": message, "errors": exc.errors()}
            return JSONResponse(jsonable_encoder(body), status_code=422)
        return web.error_page(request, 422, message)

    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app
