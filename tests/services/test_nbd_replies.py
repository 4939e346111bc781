"""What virtdeck's NBD client does with replies QEMU would not send: a backup reads into buffers
it reuses, so a reply that leaves part of a read uncovered, or lands outside it, must fail the
read rather than pass on older bytes; a hole reads as zeros whatever the buffer held before.
QEMU cannot be made to answer like that, so a scripted server on a unix socket does (the only
server of this kind in the tests)."""

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.errors import VirtdeckError
from app.services.backups.nbd_client import NbdClient

SIZE = 1 << 20
DATA, HOLE, DONE = 1, 2, 1
# A reply to one READ: (chunk type, payload, flags) for each chunk.
Reply = list[tuple[int, bytes, int]]


def _recv(conn: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        more = conn.recv(length - len(data))
        if not more:
            raise ConnectionError("the client went")
        data += more
    return data


def _serve(listener: socket.socket, answer: Callable[[int, int], Reply]) -> None:
    """One client: the handshake the client asks for, then each READ answered by answer()."""
    conn, _ = listener.accept()
    with conn:
        conn.sendall(struct.pack(">QQH", 0x4E42444D41474943, 0x49484156454F5054, 3))
        _recv(conn, 4)
        while True:  # options until GO
            _magic, option, length = struct.unpack(">QII", _recv(conn, 16))
            _recv(conn, length)
            if option == 7:  # GO: the export's size, then done
                info = struct.pack(">HQH", 0, SIZE, 0)
                conn.sendall(struct.pack(">QIII", 0x3E889045565A9, 7, 3, len(info)) + info)
                conn.sendall(struct.pack(">QIII", 0x3E889045565A9, 7, 1, 0))
                break
            conn.sendall(struct.pack(">QIII", 0x3E889045565A9, option, 1, 0))
        while True:
            try:
                _magic, _flags, command, cookie, offset, length = struct.unpack(
                    ">IHHQQI", _recv(conn, 28)
                )
            except ConnectionError:
                return
            if command != 0:  # DISC
                return
            for kind, payload, flags in answer(offset, length):
                header = struct.pack(">IHHQI", 0x668E33EF, flags, kind, cookie, len(payload))
                conn.sendall(header + payload)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[Callable[[int, int], Reply]], str]]:
    """Start a scripted server with a way of answering; its socket's path."""
    listeners: list[socket.socket] = []

    def start(answer: Callable[[int, int], Reply]) -> str:
        path = str(tmp_path / f"nbd-{len(listeners)}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listeners.append(listener)
        threading.Thread(target=_serve, args=(listener, answer), daemon=True).start()
        return path

    yield start
    for listener in listeners:
        listener.close()


def _read(path: str, buffer: bytearray) -> bytes:
    """The first 64 KiB of the export, read into buffer; the bytes the client yields."""
    with NbdClient(path, "disk") as client:
        ((got, length),) = list(client.read_ranges([(0, 65536)], lambda _wait: buffer))
    return bytes(got[:length])


def test_a_hole_reads_as_zeros_in_a_reused_buffer(server) -> None:
    path = server(lambda offset, length: [(HOLE, struct.pack(">QI", offset, length), DONE)])
    assert _read(path, bytearray(b"\xff") * (8 << 20)) == bytes(65536)


def test_data_and_a_hole_in_any_order_fill_the_read(server) -> None:
    def answer(offset: int, length: int) -> Reply:
        half = length // 2
        return [
            (HOLE, struct.pack(">QI", offset + half, length - half), 0),
            (DATA, struct.pack(">Q", offset) + b"\x07" * half, DONE),
        ]

    got = _read(server(answer), bytearray(b"\xff") * (8 << 20))
    assert got == b"\x07" * 32768 + bytes(32768)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda offset, length: [(DATA, struct.pack(">Q", offset) + bytes(length // 2), DONE)],
            id="half-the-read",
        ),
        pytest.param(lambda _offset, _length: [(0, b"", DONE)], id="no-chunk"),
        pytest.param(
            lambda offset, length: [
                (DATA, struct.pack(">Q", offset) + bytes(length // 2), 0),
                (DATA, struct.pack(">Q", offset) + bytes(length // 2), DONE),
            ],
            id="one-half-twice",
        ),
    ],
)
def test_a_reply_that_leaves_part_of_the_read_uncovered_fails_it(server, answer) -> None:
    with pytest.raises(VirtdeckError, match="did not cover the range asked for"):
        _read(server(answer), bytearray(b"\xff") * (8 << 20))


def test_data_beyond_the_read_is_refused(server) -> None:
    path = server(
        lambda offset, length: [(DATA, struct.pack(">Q", offset + 1) + bytes(length), DONE)]
    )
    with pytest.raises(VirtdeckError, match="outside the range asked for"):
        _read(path, bytearray(8 << 20))
