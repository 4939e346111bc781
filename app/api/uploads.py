"""PUT /api/v1/hosts/{id}/pools/{pool}/volumes/{name}: an ISO or disk image uploaded into a new
volume, the request body streamed to the host chunk by chunk (never held whole)."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

from app.deps import SessionsDep, SettingsDep, SyncDep, guard
from app.models.audit import audit_target
from app.services import uploads
from app.services.auth import Permission

router = APIRouter(tags=["hosts"])
PATH = "/hosts/{host_id:id}/pools/{pool:label}/volumes/{name:label}"
# The route's URLs, for the body limit (app.guards.BodyLimit) to let their bodies through.
URLS = compile_path(f"/api/v1{PATH}")[0]
# A client that sends nothing for this many seconds has gone: the upload ends short.
CLIENT_IDLE = 60.0
MAX_LENGTH_DIGITS = 20


class UploadOut(BaseModel):
    """The volume made from the upload."""

    host_id: int
    pool: str
    name: str
    path: str
    format: Literal["raw", "qcow2", "iso"]
    size: int = Field(description="bytes")
    sha256: str = Field(description="of the bytes received, as stored in the volume")


def streams_body(method: str, path: str) -> bool:
    """Whether the request is an upload, whose body this route streams under its own limit."""
    return method == "PUT" and URLS.match(path) is not None


def _length(request: Request) -> int | None:
    """The body's announced length, if the request gives a plain one."""
    length = request.headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()) or len(length) > MAX_LENGTH_DIGITS:
        return None
    return int(length)


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    """The next chunk of the body; None at its end or when the client went away."""
    try:
        return await anext(chunks, None)
    except ClientDisconnect:
        return None


def _body(request: Request, loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The request body for a worker thread, each chunk received on the event loop; it ends
    early when the client goes away or stays silent for CLIENT_IDLE seconds."""
    chunks = request.stream()
    while True:
        future = asyncio.run_coroutine_threadsafe(_next(chunks), loop)
        try:
            chunk = future.result(timeout=CLIENT_IDLE)
        except TimeoutError:
            future.cancel()
            return
        if chunk is None:
            return
        if chunk:
            yield chunk


@router.put(
    PATH,
    response_model=UploadOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "no such host or pool"},
        409: {"description": "the name is taken in the pool, or the pool is not active"},
        411: {"description": "no Content-Length (field `size`)"},
        422: {
            "description": "a bad name, an empty image, one over the upload limit or the pool's "
            "free space (all before anything is written), a body shorter than announced, or a "
            "header at odds with `format` or naming another file (the volume is removed)"
        },
        429: {"description": "as many uploads as the server takes at once are running"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
    dependencies=guard(Permission.OPERATE, "volume.upload"),
)
async def upload_volume(
    request: Request,
    host_id: int,
    pool: str,
    name: str,
    fmt: Annotated[
        Literal["raw", "qcow2", "iso"],
        Query(alias="format", description="what the image is: never guessed from its bytes"),
    ],
    sessions: SessionsDep,
    sync: SyncDep,
    settings: SettingsDep,
) -> UploadOut:
    """Upload an image into a new volume of the pool, streamed through libvirt (remote hosts
    too); the answer carries the SHA-256 of what was stored. A failed or cut-off upload leaves
    no volume."""
    request.state.audit_target = audit_target("volume", f"{pool}/{name}", f"host {host_id}")
    done = await run_in_threadpool(
        uploads.upload_image,
        sessions,
        sync,
        host_id=host_id,
        pool=pool,
        name=name,
        fmt=fmt,
        size=_length(request),
        limit=settings.upload_max_bytes,
        chunks=_body(request, asyncio.get_running_loop()),
    )
    return UploadOut(host_id=host_id, **asdict(done))
