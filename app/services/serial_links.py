"""A guest's serial console for asyncio: libvirt's console stream (any URI), read on libvirt's
event loop thread as fast as the guest writes, into a bounded queue. When the browser falls
further behind than MAX_PENDING chunks, output is skipped, and the terminal is told how much
("[virtdeck: N bytes of output skipped ...]"), so a flood holds a bounded amount of memory and
the console stays usable (stopping the stream instead would only move the backlog into
libvirt's client, which buffers without limit)."""

import asyncio
import threading
import time

from app.errors import HostUnreachable
from app.services.ports import HostCalls
from app.virt.consoles import SerialStream

# Chunks (each at most 64 KiB) waiting for the browser; past them output is skipped.
MAX_PENDING = 32
SKIPPED = "\r\n[virtdeck: {} bytes of output skipped: the browser fell behind]\r\n"
# How long a write may wait for a stream that takes nothing (a stalled host) before the console
# closes.
SEND_TIMEOUT = 10.0


class SerialLink:
    """An open serial console: recv() gives bytes, or a str saying why it ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._skipped = 0
        self.stream: SerialStream | None = None

    def deliver(self, data: bytes) -> None:
        """From libvirt's event thread: queue a chunk, or count it as skipped when the queue is
        full; the next chunk queued starts with a note of what was skipped."""
        with self._lock:
            if self._pending >= MAX_PENDING:
                self._skipped += len(data)
                return
            self._pending += 1
            skipped, self._skipped = self._skipped, 0
        if skipped:
            data = SKIPPED.format(skipped).encode() + data
        self._loop.call_soon_threadsafe(self._queue.put_nowait, data)

    def ended(self, reason: str) -> None:
        """From libvirt's event thread: the stream ended."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, reason)

    async def recv(self) -> bytes | str:
        """The next chunk from the guest, or why the console ended."""
        item = await self._queue.get()
        if isinstance(item, bytes):
            with self._lock:
                self._pending -= 1
        return item

    async def send(self, data: bytes) -> None:
        """Write to the guest (in a thread: a remote stream writes over the network)."""
        assert self.stream is not None
        await asyncio.to_thread(_send_all, self.stream, data)

    async def lost(self) -> str | None:
        """Why the console is lost, when its host stopped answering."""
        assert self.stream is not None
        if await asyncio.to_thread(self.stream.alive):
            return None
        return "the host stopped answering (libvirt's keepalive)"

    async def close(self) -> None:
        """Close the stream."""
        if self.stream is not None:
            await asyncio.to_thread(self.stream.close)


def _send_all(stream: SerialStream, data: bytes) -> None:
    deadline = time.monotonic() + SEND_TIMEOUT
    while data:
        sent = stream.send(data)
        data = data[sent:]
        if data and not sent:
            if time.monotonic() > deadline:
                raise HostUnreachable("the host took no input for the serial console")
            time.sleep(0.01)


async def open_serial(calls: HostCalls, host_id: int, guest_uuid: str, force: bool) -> SerialLink:
    """The guest's serial console; force takes it from another client (libvirt ends theirs)."""
    link = SerialLink(asyncio.get_running_loop())

    def open_stream(conn) -> SerialStream:
        return SerialStream(conn, guest_uuid, force=force, deliver=link.deliver, ended=link.ended)

    opening = asyncio.ensure_future(asyncio.to_thread(calls.call, host_id, open_stream))
    try:
        link.stream = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The stream may still open in its thread: release it then, or it holds the console.
        opening.add_done_callback(_release_late)
        raise
    return link


def _release_late(opening: asyncio.Future) -> None:
    if not opening.cancelled() and opening.exception() is None:
        threading.Thread(target=opening.result().close, daemon=True).start()
