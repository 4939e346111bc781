"""Reading a running server's /events (SSE) stream in a thread, for tests and benchmarks."""

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.serve import Server


def read_events(
    url: str,
    token: str | None,
    into: queue.Queue,
    stop: threading.Event,
    *,
    cookies: dict[str, str] | None = None,
) -> None:
    """Put (monotonic time, event name) for each SSE event of the stream into the queue, and
    "ended" when the server ends the stream. It authenticates with the token or the cookies."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with (
            httpx.Client(cookies=cookies) as client,
            client.stream("GET", f"{url}/events", headers=headers, timeout=None) as stream,
        ):
            into.put((time.monotonic(), f"status {stream.status_code}"))
            for line in stream.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    into.put((time.monotonic(), line.removeprefix("event: ")))
        into.put((time.monotonic(), "ended"))
    except httpx.HTTPError as exc:  # the server stopped
        into.put((time.monotonic(), f"closed {type(exc).__name__}"))


def drain(*queues: queue.Queue) -> None:
    """Empty the queues of what has arrived so far."""
    for q in queues:
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()


def wait_for(into: queue.Queue, name: str, timeout: float) -> float:
    """The time the named event arrived; fails after timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            at, got = into.get(timeout=left)
        except queue.Empty:
            break
        if got == name:
            return at
    raise AssertionError(f"no {name} event within {timeout} s")


@contextmanager
def event_stream(server: Server) -> Iterator[queue.Queue]:
    """The server's /events, open (answered 200) and read by a thread into a queue of
    (monotonic time, event name); closed afterwards."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(
        target=read_events, args=(server.url, server.token, events, stop), daemon=True
    )
    reader.start()
    wait_for(events, "status 200", 10)
    try:
        yield events
    finally:
        stop.set()
