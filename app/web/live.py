"""GET /events: the server-sent events stream pages subscribe to (htmx SSE extension)."""

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.deps import guard
from app.live import LiveBus
from app.services.auth import Permission

router = APIRouter()
EVENTS_PATH = "/events"
# A comment line this often keeps proxies from closing an idle stream and notices a gone client.
PING_SECONDS = 15.0
# Streams end after this long; the browser reconnects at once, which checks its login again.
STREAM_SECONDS = 300.0


async def _stream(request: Request, bus: LiveBus) -> AsyncIterator[str]:
    subscriber = bus.subscribe(asyncio.get_running_loop())
    ends = time.monotonic() + STREAM_SECONDS
    try:
        yield "retry: 1000\n: connected\n\n"
        while not subscriber.closed and time.monotonic() < ends:
            topics = await subscriber.next(PING_SECONDS)
            if await request.is_disconnected():
                break
            if not topics:
                yield ": ping\n\n"
            for topic in sorted(topics):
                yield f"event: {topic}\ndata: {topic}\n\n"
    finally:
        bus.unsubscribe(subscriber)


@router.get(EVENTS_PATH, dependencies=guard(Permission.VIEW))
async def events(request: Request) -> StreamingResponse:
    """Topics as they change: guest-<uuid>, host-<id>, hosts, guests, job-<id>, jobs, backups,
    backups-<guest uuid>, activity, activity-<guest uuid>. An event's name and data: the topic."""
    return StreamingResponse(
        _stream(request, request.app.state.live),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
