"""GET /events: the server-sent events stream pages subscribe to (htmx SSE extension)."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import needs, still_allowed
from app.live import USER_TOPIC, LiveBus
from app.services.auth import Permission, Principal

router = APIRouter()
EVENTS_PATH = "/events"
# A comment line this often keeps proxies from closing an idle stream and notices a gone client.
PING_SECONDS = 15.0
# The login is checked again this often, busy or idle (an idle or absolute session limit passed,
# a token revoked), and at once when the user's own topic arrives.
CHECK_SECONDS = 15.0
# Streams end after this long; the browser reconnects at once, which checks its login again.
STREAM_SECONDS = 300.0


async def _stream(request: Request, bus: LiveBus, principal: Principal) -> AsyncIterator[str]:
    subscriber = bus.subscribe(asyncio.get_running_loop())
    ends = time.monotonic() + STREAM_SECONDS
    next_check = time.monotonic() + CHECK_SECONDS
    # Published when this user's role, password or disabled flag changes: check at once.
    own = f"{USER_TOPIC}{principal.user_id}"
    try:
        yield "retry: 1000\n: connected\n\n"
        while not subscriber.closed and time.monotonic() < ends:
            wait = min(PING_SECONDS, max(0.0, next_check - time.monotonic()))
            topics = await subscriber.next(wait)
            if await request.is_disconnected():
                break
            if own in topics or time.monotonic() >= next_check:
                if not await run_in_threadpool(still_allowed, request, Permission.VIEW):
                    break
                next_check = time.monotonic() + CHECK_SECONDS
            if not topics:
                yield ": ping\n\n"
            for topic in sorted(t for t in topics if not t.startswith(USER_TOPIC)):
                yield f"event: {topic}\ndata: {topic}\n\n"
    finally:
        bus.unsubscribe(subscriber)


@router.get(EVENTS_PATH)
async def events(
    request: Request, principal: Annotated[Principal, needs(Permission.VIEW)]
) -> StreamingResponse:
    """Topics as they change: guest-<uuid>, host-<id>, hosts, guests, job-<id>, jobs, backups,
    backups-<guest uuid>, activity, activity-<guest uuid>. An event's name and data: the topic.
    The stream ends when its session or token stops being valid (disabled user, new password,
    session expired)."""
    return StreamingResponse(
        _stream(request, request.app.state.live, principal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
