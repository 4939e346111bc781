"""create_app(settings): routers, static files, error handlers, audit, the link to the workers,
and (unless the worker runs as a process of its own) a worker inside the app."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from app import api, web
from app.api import docs, ops, uploads
from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory, transaction
from app.deps import SAFE_METHODS
from app.errors import Conflict, VirtdeckError
from app.guards import BodyLimit, SecurityHeaders
from app.live import LiveBus
from app.services import audit
from app.services import backups as backup_service
from app.services.auth import ANONYMOUS
from app.services.hosts import ensure_default_host
from app.services.setup import startup_setup_code
from app.workers.calls import HostLink
from app.workers.memory import release_free_memory
from app.workers.worker import TRIM_EVERY, Worker, instance_name

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)
TARGET_KINDS = {"uuid": "guest"}


# Machine endpoints outside /api answer errors in JSON too (no login page for a scraper or an
# EventSource).
MACHINE_PATHS = frozenset({"/metrics", "/events", "/healthz", "/readyz", "/openapi.json"})


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in MACHINE_PATHS


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{field}: {error['msg']}" if field else error["msg"])
    return "; ".join(parts)


def _error_response(request: Request, exc: VirtdeckError) -> Response:
    """The error as JSON for machines, else as a page (or a toast for htmx)."""
    if _wants_json(request):
        body = {"detail": exc.message, "field": exc.field, **exc.extra}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return web.error_page(request, exc)


def _target(session: Session, request: Request) -> str | None:
    explicit = getattr(request.state, "audit_target", None)
    if explicit:
        return explicit
    names = [
        audit.named(session, TARGET_KINDS.get(key, key.removesuffix("_id")), value)
        for key, value in request.path_params.items()
        if key in TARGET_KINDS or key.endswith("_id")  # not e.g. {action}
    ]
    return ", ".join(names) or None


def _action(request: Request) -> str:
    declared = getattr(request.state, "action", None)
    if declared:
        return declared
    path = request.url.path
    for key, value in request.path_params.items():  # back to the route's template
        path = path.replace(f"/{value}", f"/{{{key}}}", 1)
    return f"{request.method} {path}"


def _write_audit(app: FastAPI, request: Request, status_code: int) -> None:
    state = request.state
    with transaction(app.state.sessions) as session:
        audit.record(
            session,
            request_id=state.request_id,
            principal=getattr(state, "principal", ANONYMOUS),
            method=request.method,
            path=request.url.path,
            action=_action(request),
            target=_target(session, request),
            status_code=status_code,
            denied=getattr(state, "audit_denied", False),
            error=getattr(state, "audit_error", None),
        )


def _recorded(request: Request, budget: audit.RateBudget) -> bool:
    """Whether the request gets an audit row: it reached a route (so its identifiers have their
    shape) and changed or was refused something; anonymous ones (refused, failed a form's
    validation, ...) within the budget, since anyone can send them."""
    state = request.state
    denied = getattr(state, "audit_denied", False)
    if getattr(state, "no_route", False) or (request.method in SAFE_METHODS and not denied):
        return False
    if getattr(state, "principal", ANONYMOUS).auth == "anonymous":
        return budget.take()
    return True


def _install_audit(app: FastAPI, settings: Settings) -> None:
    budget = audit.RateBudget(settings.audit_anonymous_per_minute, what="anonymous requests")
    # The console WebSocket (app.web.consoles) records its anonymous refusals within it too.
    app.state.anonymous_audit = budget

    @app.middleware("http")
    async def audit_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = uuid.uuid4().hex
        try:
            response = await call_next(request)
        except Exception:
            request.state.audit_error = "internal error"
            await run_in_threadpool(_write_audit, app, request, 500)
            raise
        response.headers["X-Request-ID"] = request.state.request_id
        if _recorded(request, budget):
            await run_in_threadpool(_write_audit, app, request, response.status_code)
        return response


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VirtdeckError)
    async def virtdeck_error(request: Request, exc: VirtdeckError) -> Response:
        request.state.audit_error = exc.message
        request.state.audit_denied = exc.denied
        return _error_response(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # 404 and 405 come from routing itself (no route for the path or the method): nothing
        # ran, nobody was authenticated, and the path is not worth an audit row.
        request.state.no_route = exc.status_code in (404, 405)
        error = VirtdeckError(str(exc.detail).lower())
        error.status_code = exc.status_code
        error.headers = dict(exc.headers or {})
        request.state.audit_error = error.message
        return _error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message = _validation_message(exc)
        request.state.audit_error = message
        if _wants_json(request):
            body = {"detail": message, "errors": exc.errors()}
            return JSONResponse(jsonable_encoder(body), status_code=422)
        return web.error_page(request, VirtdeckError(message), status_code=422)


async def _trim_memory() -> None:
    """Every TRIM_EVERY seconds, hand what malloc keeps free (after large pages) back."""
    while True:
        await asyncio.sleep(TRIM_EVERY)
        release_free_memory()


def create_app(
    settings: Settings | None = None,
    *,
    worker: bool = True,
    wake: Callable[[], None] | None = None,
) -> FastAPI:
    """The virtdeck application for these settings; with worker, a worker runs inside it (as
    in tests), else `virtdeck worker` processes do the syncing and the jobs (`wake` tells the
    one `virtdeck serve` started that a request waits)."""
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    instance = instance_name()
    inside = Worker(sessions=sessions, settings=settings, instance=instance) if worker else None
    # Requests reach the hosts and the workers through a HostLink: the worker's own when it
    # runs inside (calls then share its sync connections).
    link = (
        inside.link
        if inside is not None
        else HostLink(sessions=sessions, settings=settings, wake=wake)
    )
    live = LiveBus(engine)
    live.attach(sessions)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.default_host_uri:
            # Another instance starting at the same moment may register it first.
            with contextlib.suppress(Conflict), transaction(sessions) as session:
                ensure_default_host(
                    session,
                    name=settings.default_host_name,
                    uri=settings.default_host_uri,
                    test_driver_dir=settings.test_driver_dir,
                )
        _app.state.setup_code = startup_setup_code(sessions, settings)
        try:  # closed now rather than at the first backup: older versions left it 0755
            backup_service.backup_root(settings)
        except OSError as exc:
            log.warning("cannot make the backup directory private: %s", exc)
        live.start()
        if inside is not None:
            inside.start()
        trimming = asyncio.create_task(_trim_memory())
        yield
        trimming.cancel()
        live.stop()
        if inside is not None:
            inside.stop()  # stops its link too
        else:
            link.stop()
        engine.dispose()

    # /docs is our own page (app/api/docs.py): vendored assets, no inline script. No ReDoc.
    app = FastAPI(
        title="virtdeck", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.sync = link
    app.state.jobs = link
    app.state.worker = inside
    app.state.instance = instance
    app.state.live = live
    _install_error_handlers(app)
    _install_audit(app, settings)
    # Outside the audit: a refused body is not read, so it never reaches a route.
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        render=_error_response,
        streamed=uploads.streams_body,
    )
    app.add_middleware(SecurityHeaders)
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app
