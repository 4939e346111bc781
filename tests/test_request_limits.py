"""Request bodies over the limit (VIRTDECK_MAX_BODY_BYTES, 1 MiB by default) get 413 before the
server reads them, whether they announce their length or stream in chunks, and however they are
addressed: a real `virtdeck serve`, its memory read from /proc."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.serve import Server, running_server

MIB = 1024 * 1024
# Large enough that reading it whole shows in the server's memory (it grew 3x the body before).
BIG = 64 * MIB
PIECE = 64 * 1024
# The peak memory may grow by this much at most: the limit itself and some noise.
MEMORY_SLACK = 6 * MIB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits"), {"VIRTDECK_DEFAULT_HOST_URI": ""}) as s:
        # One request first: what the first request loads once is not the body's doing.
        assert s.api("GET", "/hosts").status_code == 200
        yield s


def peak_memory(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def body_pieces(*, chunked: bool) -> Iterator[bytes]:
    """BIG bytes of a JSON object with one long string, as raw pieces or as HTTP/1.1 chunks."""
    middle = [b"a" * PIECE] * (BIG // PIECE - 2)
    pieces = [b'{"name": "' + b"a" * (PIECE - 10), *middle, b"a" * (PIECE - 2) + b'"}']
    for piece in pieces:
        yield b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


def post_raw(
    server: Server, path: str, *, content_type: str, chunked: bool
) -> tuple[int, dict[str, str], bytes, float]:
    """POST a BIG body anonymously over a plain socket while reading the answer as soon as it
    comes: its status, headers, body, and the seconds until it came."""
    address = urlsplit(server.url)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
        f"{length}\r\n\r\n"
    ).encode()
    stop = threading.Event()
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:

        def upload() -> None:
            try:
                for piece in body_pieces(chunked=chunked):
                    if stop.is_set():
                        return
                    sock.sendall(piece)
            except OSError:  # the server closed the connection: fine
                pass

        started = time.monotonic()
        sock.sendall(head)
        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {received!r}"
            received += data
        took = time.monotonic() - started
        status_line, _, rest = received.partition(b"\r\n")
        header_block, _, body = rest.partition(b"\r\n\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (
                line.decode().partition(":") for line in header_block.split(b"\r\n")
            )
        )
        while len(body) < int(headers.get("content-length", "0")):
            data = sock.recv(65536)
            assert data, "connection closed in the middle of the answer"
            body += data
        stop.set()
        uploader.join(timeout=30)
    return int(status_line.split()[1]), headers, body, took


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_anonymous_json_body_gets_413_at_once_without_growing_the_server(
    server: Server, chunked: bool
) -> None:
    before = peak_memory(server.pid)

    status, headers, body, took = post_raw(
        server, "/api/v1/hosts", content_type="application/json", chunked=chunked
    )

    grew = peak_memory(server.pid) - before
    assert status == 413, body[:300]
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "detail": "request body: larger than the limit of 1048576 bytes",
        "field": None,
    }
    assert took < 3.0
    assert grew < MEMORY_SLACK, f"peak memory grew by {grew / MIB:.1f} MiB"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_form_gets_a_413_page(server: Server, chunked: bool) -> None:
    status, headers, body, _took = post_raw(
        server, "/login", content_type="application/x-www-form-urlencoded", chunked=chunked
    )

    assert status == 413
    assert headers["content-type"].startswith("text/html")
    assert "Error 413" in body.decode()
    assert "larger than the limit of 1048576 bytes" in body.decode()


def test_a_chunked_body_under_the_limit_reaches_the_route(server: Server) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"name": "chunked-host",'
        yield b' "uri": "xen:///system"}'

    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}/api/v1/hosts", content=pieces(), headers=headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "uri", response.text
