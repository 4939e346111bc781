"""The console WebSockets (a guest's screen for noVNC, its serial line for xterm.js) and the
console window. The relay is asyncio end to end with bounded buffers: a slow guest, a stalled
host or a slow browser holds only its own console."""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.deps import SessionDep, guard, resolve_principal, same_origin, still_allowed
from app.errors import ConsoleInUse, NotFound, VirtdeckError
from app.services import consoles
from app.services import guests as guest_service
from app.services.auth import ANONYMOUS, Forbidden, NotAuthenticated, Permission, Principal
from app.services.console_links import HostRoute, Link, guest_stopped, open_vnc
from app.services.serial_links import SerialLink, open_serial
from app.web.templating import templates

log = logging.getLogger(__name__)
router = APIRouter()
# Input from the browser larger than this in one message (a paste) closes the console.
MAX_INPUT = 64 * 1024
# WebSocket close codes the console page explains (4000-4999 are the application's).
CLOSE_NORMAL = 1000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409
CLOSE_UNAVAILABLE = 4503
CLOSE_FAILED = 4500
# Who may open a console (checked in the socket itself: a WebSocket has no CSRF token).
CONSOLE_PERMISSION = Permission.OPERATE
# The longest close reason a WebSocket frame carries, in UTF-8 bytes.
REASON_BYTES = 123


@dataclass
class Admitted:
    """A console the checks let open."""

    principal: Principal
    guest_name: str
    route: HostRoute
    session_id: int
    takeover: bool


class Refused(Exception):
    """A console not opened: the close code and the reason the page shows."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _close_code(exc: VirtdeckError) -> int:
    return {
        401: CLOSE_UNAUTHENTICATED,
        403: CLOSE_FORBIDDEN,
        404: CLOSE_NOT_FOUND,
        409: CLOSE_CONFLICT,
        503: CLOSE_UNAVAILABLE,
    }.get(exc.status_code, CLOSE_FAILED)


def _short(reason: str) -> str:
    """The reason cut to what a close frame carries, at a character boundary."""
    data = reason.encode()
    if len(data) <= REASON_BYTES:
        return reason
    return data[: REASON_BYTES - 3].decode(errors="ignore") + "…"


def _admit(websocket: WebSocket, uuid: str, kind: str, secret: str) -> Admitted:
    """Check who asks, with which ticket, for which guest; record the opened session."""
    app = websocket.app
    with app.state.sessions() as session:
        principal, guest = ANONYMOUS, None
        try:
            principal = resolve_principal(websocket, session, app.state.settings)
            if principal.auth == "anonymous":
                raise NotAuthenticated("log in first (or send an API token)")
            if principal.auth == "cookie" and "origin" not in websocket.headers:
                # A browser always sends an Origin with a WebSocket; none means another client
                # carrying someone's cookie.
                raise NotAuthenticated("a console opened with a login cookie needs an Origin")
            if not principal.allows(CONSOLE_PERMISSION):
                raise consoles_forbidden(principal)
            guest = guest_service.get_guest(session, uuid)
            ticket = consoles.redeem_ticket(
                session, secret=secret, user_id=principal.user_id, guest_uuid=uuid, kind=kind
            )
            session.commit()  # a ticket is used once, whatever follows
            if ticket is None:
                raise NotAuthenticated(
                    "the console ticket is unknown, already used or expired: open the console again"
                )
            consoles.check_live(guest)
            consoles.refuse_if_held(session, uuid, kind=kind, takeover=ticket.takeover)
            row = consoles.start(
                session, principal=principal, guest=guest, kind=kind, takeover=ticket.takeover
            )
            host = guest.host
            admitted = Admitted(
                principal=principal,
                guest_name=guest.name,
                route=HostRoute(host.id, host.uri, host.console_address),
                session_id=row.id,
                takeover=ticket.takeover,
            )
            session.commit()
            return admitted
        except VirtdeckError as exc:
            session.rollback()
            # Anyone can knock: anonymous refusals are recorded within the same budget as
            # anonymous requests (app.main).
            if principal.auth != "anonymous" or app.state.anonymous_audit.take():
                consoles.record_refusal(
                    session, principal=principal, guest=guest, uuid=uuid, kind=kind,
                    status_code=exc.status_code, reason=exc.message, denied=exc.denied,
                )  # fmt: skip
                session.commit()
            raise Refused(_close_code(exc), exc.message) from exc


def consoles_forbidden(principal: Principal) -> VirtdeckError:
    """What a viewer is told."""
    return Forbidden(
        f"your role ({principal.role}) does not allow opening a console (operators may); "
        "the guest page shows its screenshot"
    )


@router.websocket("/guests/{uuid:guest}/console/{kind:word}/ws")
async def console_socket(websocket: WebSocket, uuid: str, kind: str, ticket: str = "") -> None:
    """A guest's console: `vnc` (RFB bytes, for noVNC) or `serial` (the serial line's bytes,
    for xterm.js). Needs the login (cookie with this site's Origin, or an API token) of an
    operator and a ticket from POST /api/v1/guests/{uuid}/console/tickets, used once. Closes
    with a reason when the guest stops, the host is lost, or the login ends."""
    settings = websocket.app.state.settings
    if not same_origin(websocket, settings):
        await websocket.close(code=1008)  # before the handshake completes: an HTTP 403
        return
    subprotocols = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in subprotocols else None)
    try:
        consoles.check_kind(kind)
        admitted = await run_in_threadpool(_admit, websocket, uuid, kind, ticket)
    except VirtdeckError as exc:
        await _close(websocket, _close_code(exc), exc.message)
        return
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    code, reason = CLOSE_FAILED, "the server stopped"
    try:
        code, reason = await _relay(websocket, uuid, kind, admitted)
    finally:
        await run_in_threadpool(_finish, websocket, admitted, reason)
    await _close(websocket, code, reason)


# What tests/test_permissions.py reads for this route, as it reads `needs` of the others.
console_socket.permission = CONSOLE_PERMISSION  # type: ignore[attr-defined]


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await websocket.close(code=code, reason=_short(reason))


def _settle_takeover(websocket: WebSocket, admitted: Admitted, *, opened: bool) -> None:
    """After a takeover's console opened (or not): end the holder's session, or leave it be."""
    if not admitted.takeover:
        return
    with websocket.app.state.sessions() as session:
        consoles.settle_takeover(session, session_id=admitted.session_id, opened=opened)
        session.commit()


def _in_use(websocket: WebSocket, admitted: Admitted, uuid: str) -> str:
    with websocket.app.state.sessions() as session:
        held = consoles.holder(session, uuid, other_than=admitted.session_id)
        if held is None:
            return "the serial console is in use by another client (outside virtdeck)"
        return consoles.in_use_message(held)


def _finish(websocket: WebSocket, admitted: Admitted, reason: str) -> None:
    with websocket.app.state.sessions() as session:
        consoles.finish(
            session, principal=admitted.principal, session_id=admitted.session_id, reason=reason
        )
        session.commit()


async def _relay(websocket: WebSocket, uuid: str, kind: str, admitted: Admitted) -> tuple[int, str]:
    """Carry bytes both ways until one side ends or the login does; the close code and why."""
    app = websocket.app
    link: Link | SerialLink
    try:
        if kind == "vnc":
            link = await open_vnc(app.state.sync, admitted.route, uuid, app.state.settings)
        else:
            host_id = admitted.route.host_id
            link = await open_serial(app.state.sync, host_id, uuid, admitted.takeover)
    except VirtdeckError as exc:
        await run_in_threadpool(_settle_takeover, websocket, admitted, opened=False)
        if isinstance(exc, ConsoleInUse):  # held through another virtdeck process, perhaps
            return CLOSE_CONFLICT, await run_in_threadpool(_in_use, websocket, admitted, uuid)
        return _close_code(exc), exc.message
    except Exception:
        await run_in_threadpool(_settle_takeover, websocket, admitted, opened=False)
        log.exception("opening the %s console of %s failed", kind, uuid)
        return CLOSE_FAILED, "the console could not be opened (see the server's log)"
    await run_in_threadpool(_settle_takeover, websocket, admitted, opened=True)
    activity = _Activity()
    from_guest = asyncio.create_task(_to_browser(websocket, link.recv))
    to_guest = asyncio.create_task(_from_browser(websocket, link.send, activity, TYPED[kind]))
    tasks = {
        to_guest,
        from_guest,
        asyncio.create_task(_watch(websocket, admitted, activity, link.lost)),
    }
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        outcome = next(iter(done))
        failed = False
        try:
            result = outcome.result()
        except VirtdeckError as exc:
            result, failed = (_close_code(exc), exc.message), True
        except Exception:
            log.exception("relaying the %s console of %s failed", kind, uuid)
            return CLOSE_FAILED, "the console failed (see the server's log)"
        # The guest's side ended, or the link failed either way: a QEMU that exits may reset
        # the connection (ECONNRESET, EPIPE) rather than end it.
        if outcome is from_guest or (failed and outcome is to_guest):
            return await _why_the_guest_side_ended(websocket, admitted, uuid) or result
        return result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await link.close()


async def _why_the_guest_side_ended(
    websocket: WebSocket, admitted: Admitted, uuid: str
) -> tuple[int, str] | None:
    """A clearer reason than the stream's, when there is one: someone took the console over,
    or the guest stopped."""
    taken = await run_in_threadpool(_announced, websocket, admitted)
    if taken is not None:
        return CLOSE_CONFLICT, taken
    if await guest_stopped(websocket.app.state.sync, admitted.route.host_id, uuid):
        return CLOSE_CONFLICT, "the guest is not running any more (it stopped)"
    return None


def _announced(websocket: WebSocket, admitted: Admitted) -> str | None:
    with websocket.app.state.sessions() as session:
        return consoles.end_announced(session, admitted.session_id)


def _stamp(websocket: WebSocket, admitted: Admitted) -> str | None:
    with websocket.app.state.sessions() as session:
        ended = consoles.stamp(session, admitted.session_id)
        session.commit()
    return ended


class _Activity:
    """Whether the user typed or clicked since the last look (keeps the login alive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = False

    def mark(self) -> None:
        with self._lock:
            self._seen = True

    def take(self) -> bool:
        with self._lock:
            seen, self._seen = self._seen, False
            return seen


# What a person does, as opposed to what the console client sends by itself (noVNC asks for
# screen updates all the time): RFB key, pointer and QEMU extended key messages; any serial input.
TYPED: dict[str, Callable[[bytes], bool]] = {
    "vnc": lambda data: data[:1] in (b"\x04", b"\x05", b"\xff"),
    "serial": bool,
}


async def _from_browser(
    websocket: WebSocket,
    send: Callable[[bytes], Awaitable[None]],
    activity: _Activity,
    typed: Callable[[bytes], bool],
) -> tuple[int, str]:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return CLOSE_NORMAL, "closed by the user"
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        if len(data) > MAX_INPUT:
            return CLOSE_FAILED, f"more than {MAX_INPUT // 1024} KiB sent at once"
        if typed(data):
            activity.mark()
        await send(data)


async def _to_browser(
    websocket: WebSocket, recv: Callable[[], Awaitable[bytes | str]]
) -> tuple[int, str]:
    while True:
        data = await recv()
        if isinstance(data, str):  # the link ended, and why
            return CLOSE_NORMAL, data
        if not data:
            return CLOSE_NORMAL, "the guest's console closed (the guest stopped?)"
        # Waits while the browser is slow to take it: nothing more is read meanwhile.
        await websocket.send_bytes(data)


async def _watch(
    websocket: WebSocket,
    admitted: Admitted,
    activity: _Activity,
    lost: Callable[[], Awaitable[str | None]],
) -> tuple[int, str]:
    """Every STAMP_EVERY seconds: is the login still valid and an operator's, was the session
    taken over, and is the host still there?"""
    while True:
        await asyncio.sleep(consoles.STAMP_EVERY)
        reason = await run_in_threadpool(_check, websocket, admitted, activity.take())
        if reason is not None:
            return reason
        gone = await lost()
        if gone is not None:
            return CLOSE_UNAVAILABLE, gone


def _check(websocket: WebSocket, admitted: Admitted, touched: bool) -> tuple[int, str] | None:
    if not still_allowed(websocket, CONSOLE_PERMISSION, touch=touched):
        return CLOSE_UNAUTHENTICATED, "your login ended (logged out, expired or disabled)"
    ended = _stamp(websocket, admitted)
    return None if ended is None else (CLOSE_CONFLICT, ended)


@router.get(
    "/guests/{uuid:guest}/console", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def console_window(request: Request, session: SessionDep, uuid: str, kind: str = "vnc"):
    """The guest's console in a window of its own: its screen (kind=vnc) or serial line."""
    guest = guest_service.get_guest(session, uuid)
    if kind not in consoles.KINDS:
        raise NotFound(f"no console of kind {kind!r}")
    return templates.TemplateResponse(
        request, "console.html", {"guest": guest, "host": guest.host, "kind": kind}
    )
