"""A small NBD client for a unix socket (the protocol of NetworkBlockDevice/nbd doc/proto.md):
fixed-newstyle handshake, structured replies, one meta context, and the two commands a backup
needs: BLOCK_STATUS (which extents a dirty bitmap marks) and READ. Pure Python, since the venv
has no libnbd. The server is QEMU, but every length and count it sends is bounded before use."""

import mmap
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.errors import VirtdeckError
from app.virt.failures import one_line

_NBDMAGIC = 0x4E42444D41474943
_IHAVEOPT = 0x49484156454F5054
_REPLY_MAGIC = 0x3E889045565A9
_REQUEST_MAGIC = 0x25609513
_SIMPLE_MAGIC = 0x67446698
_STRUCTURED_MAGIC = 0x668E33EF

_FLAG_FIXED_NEWSTYLE = 1 << 0
_FLAG_NO_ZEROES = 1 << 1

_OPT_GO = 7
_OPT_STRUCTURED_REPLY = 8
_OPT_SET_META_CONTEXT = 10

_REP_ACK = 1
_REP_INFO = 3
_REP_META_CONTEXT = 4
_REP_ERROR_BIT = 1 << 31
_INFO_EXPORT = 0

_CMD_READ = 0
_CMD_DISC = 2
_CMD_BLOCK_STATUS = 7

_REPLY_FLAG_DONE = 1 << 0
_REPLY_NONE = 0
_REPLY_OFFSET_DATA = 1
_REPLY_OFFSET_HOLE = 2
_REPLY_BLOCK_STATUS = 5
_REPLY_ERROR_BIT = 1 << 15

TIMEOUT = 120.0  # seconds the server may take to answer
WritableBuffer = bytearray | mmap.mmap  # what a read lands in (a writer lends maps)
MAX_READ = 8 << 20  # bytes one READ asks for (8 in flight keep QEMU's reads going)
# A block status request covers at most this much (the length field is 32 bits; aligned).
_MAX_STATUS = 1 << 30
_MAX_OPTION_REPLY = 64 << 10
_MAX_STATUS_CHUNK = 8 << 20  # a million extents
_MAX_ERROR_CHUNK = 64 << 10
_IN_FLIGHT = 64 << 20  # bytes of reads outstanding at once
# Requests outstanding at once (QEMU serves 16): with more, the requests queued on a server
# that is blocked sending replies can fill the socket, and both sides wait for ever.
_MAX_REQUESTS = 16
_OPTIONS = {
    _OPT_GO: "GO",
    _OPT_STRUCTURED_REPLY: "STRUCTURED_REPLY",
    _OPT_SET_META_CONTEXT: "SET_META_CONTEXT",
}

_OPT_HEADER = struct.Struct(">QIII")
_REQUEST = struct.Struct(">IHHQQI")
_CHUNK = struct.Struct(">HHQI")  # after the magic: flags, type, cookie, length


@dataclass(frozen=True)
class Extent:
    """A run of the export with the same status flags (for a dirty bitmap, bit 0 = dirty)."""

    offset: int
    length: int
    flags: int


class NbdClient:
    """One connection to an export, opened with one meta context (None: no block status)."""

    def __init__(self, socket_path: str, export: str, *, context: str | None = None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._cookie = 0
        self._context_id: int | None = None
        self.size = 0
        try:
            self._sock.settimeout(TIMEOUT)
            self._sock.connect(socket_path)
            self._handshake(export, context)
        except OSError as exc:
            self._sock.close()
            raise VirtdeckError(f"cannot read the disk's NBD export: {exc}") from exc
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> "NbdClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tell the server the client is done (NBD_CMD_DISC) and close the socket."""
        try:
            self._send_request(_CMD_DISC, 0, 0)
        except VirtdeckError:
            pass  # the server went first; nothing is left to say
        finally:
            self._sock.close()

    # The handshake.

    def _handshake(self, export: str, context: str | None) -> None:
        magic, option_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != _NBDMAGIC or option_magic != _IHAVEOPT:
            raise VirtdeckError("the NBD server does not speak the newstyle protocol")
        if not flags & _FLAG_FIXED_NEWSTYLE or not flags & _FLAG_NO_ZEROES:
            raise VirtdeckError("the NBD server lacks fixed newstyle negotiation")
        self._sock.sendall(struct.pack(">I", _FLAG_FIXED_NEWSTYLE | _FLAG_NO_ZEROES))
        self._option(_OPT_STRUCTURED_REPLY, b"")
        self._expect_ack(_OPT_STRUCTURED_REPLY)
        name = export.encode()
        if context is not None:
            query = context.encode()
            self._option(
                _OPT_SET_META_CONTEXT,
                struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(query)) + query,
            )
            while (reply := self._option_reply(_OPT_SET_META_CONTEXT))[0] == _REP_META_CONTEXT:
                data = reply[1]
                if len(data) < 4 or data[4:] != query:
                    raise VirtdeckError("the NBD server answered with another meta context")
                self._context_id = struct.unpack(">I", data[:4])[0]
            if reply[0] != _REP_ACK or self._context_id is None:
                raise VirtdeckError(f"the NBD export has no meta context {context}")
        self._option(_OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        while (reply := self._option_reply(_OPT_GO))[0] == _REP_INFO:
            data = reply[1]
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == _INFO_EXPORT:
                self.size = struct.unpack(">Q", data[2:10])[0]
        if reply[0] != _REP_ACK:
            raise VirtdeckError(f"the NBD server has no export {export}")

    def _option(self, option: int, data: bytes) -> None:
        self._sock.sendall(struct.pack(">QII", _IHAVEOPT, option, len(data)) + data)

    def _option_reply(self, option: int) -> tuple[int, bytes]:
        """(reply type, data) of the next reply to option; an error reply raises."""
        magic, answered, kind, length = _OPT_HEADER.unpack(self._recv(_OPT_HEADER.size))
        if magic != _REPLY_MAGIC or answered != option or length > _MAX_OPTION_REPLY:
            raise VirtdeckError("the NBD server sent a malformed option reply")
        data = self._recv(length)
        if kind & _REP_ERROR_BIT:
            message = data.decode(errors="replace")
            raise VirtdeckError(
                one_line(f"the NBD server refused NBD_OPT_{_OPTIONS[option]}: {message}")
            )
        return kind, data

    def _expect_ack(self, option: int) -> None:
        if self._option_reply(option)[0] != _REP_ACK:
            raise VirtdeckError(f"the NBD server did not acknowledge NBD_OPT_{_OPTIONS[option]}")

    # Transmission.

    def block_status(self, offset: int, length: int) -> list[Extent]:
        """The extents of [offset, offset + length) in the meta context, in order, covering it
        exactly (the last one cut at its end)."""
        if self._context_id is None:
            raise VirtdeckError("no meta context was negotiated for block status")
        self._check_range(offset, length)
        extents: list[Extent] = []
        position, end = offset, offset + length
        while position < end:
            step = min(end - position, _MAX_STATUS)
            cookie = self._send_request(_CMD_BLOCK_STATUS, position, step)
            reached = position
            for kind, data in self._chunks(cookie, _MAX_STATUS_CHUNK):
                if kind != _REPLY_BLOCK_STATUS:
                    raise VirtdeckError(f"the NBD server sent a chunk of type {kind} for status")
                if len(data) < 12 or (len(data) - 4) % 8:
                    raise VirtdeckError("the NBD server sent a malformed block status")
                if struct.unpack(">I", data[:4])[0] != self._context_id:
                    continue  # another context's answer: not asked for
                for run, flags in struct.iter_unpack(">II", data[4:]):
                    run = min(run, end - reached)
                    if run == 0:
                        break
                    extents.append(Extent(reached, run, flags))
                    reached += run
            if reached == position:
                raise VirtdeckError("the NBD server's block status made no progress")
            position = reached
        return _merged(extents)

    def read_ranges(
        self, ranges: list[tuple[int, int]], lend: Callable[[bool], WritableBuffer | None]
    ) -> Iterator[tuple[WritableBuffer, int]]:
        """Each range's bytes, in order, with several reads in flight: ranges are split into
        reads of at most MAX_READ, each into a buffer of at least that size from lend(wait),
        yielded as (buffer, length) for the caller to hand back. lend(False) may answer None
        (none free: the reads in flight go on); lend(True) must give one. QEMU may answer the
        reads in any order, their chunks interleaved: each chunk lands in its own request's
        buffer, and a reply must cover its request exactly, since a lent buffer holds older
        bytes where it does not."""
        pieces = [
            (start, min(MAX_READ, offset + length - start))
            for offset, length in ranges
            for start in range(offset, offset + length, MAX_READ)
        ]
        for offset, length in pieces:
            self._check_range(offset, length)
        pending: dict[int, _Read] = {}  # by cookie, until its reply is done
        order: deque[tuple[int, _Read]] = deque()  # (cookie, read) as asked
        sent = in_flight = 0
        while order or sent < len(pieces):
            while (
                sent < len(pieces)
                and len(order) < _MAX_REQUESTS
                and (not order or in_flight + pieces[sent][1] <= _IN_FLIGHT)
            ):
                buffer = lend(not order)
                if buffer is None:
                    break
                offset, length = pieces[sent]
                if len(buffer) < length:
                    raise VirtdeckError(f"a read of {length} bytes was lent {len(buffer)}")
                read = _Read(offset, length, buffer)
                pending[self._send_request(_CMD_READ, offset, length)] = read
                order.append((self._cookie, read))
                in_flight += length
                sent += 1
            while order[0][0] in pending:
                self._read_chunk(pending)
            read = order.popleft()[1]
            in_flight -= read.length
            yield read.buffer, read.length

    def _read_chunk(self, pending: dict[int, "_Read"]) -> None:
        """Receive one chunk of a read into its request's buffer (a hole as zeros); a request
        whose chunk says DONE leaves pending, once its chunks are found to cover it."""
        flags, kind, cookie, size = self._chunk_header()
        read = pending.get(cookie)
        if read is None:
            raise VirtdeckError("the NBD server answered a request that was not made")
        view = memoryview(read.buffer)
        if kind == _REPLY_OFFSET_DATA:
            if size < 8:
                raise VirtdeckError("the NBD server sent a malformed data chunk")
            at = struct.unpack(">Q", self._recv(8))[0] - read.offset
            read.cover(at, size - 8)
            self._recv_into(view[at : at + size - 8])
        elif kind == _REPLY_OFFSET_HOLE:
            if size != 12:
                raise VirtdeckError("the NBD server sent a malformed hole chunk")
            at, hole = struct.unpack(">QI", self._recv(12))
            at -= read.offset
            read.cover(at, hole)
            view[at : at + hole] = bytes(hole)
        elif kind & _REPLY_ERROR_BIT:
            self._raise_error(size)
        elif kind != _REPLY_NONE or size:
            raise VirtdeckError(f"the NBD server sent a chunk of type {kind} for a read")
        if flags & _REPLY_FLAG_DONE:
            read.check_covered()
            del pending[cookie]

    def _chunks(self, cookie: int, limit: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of each chunk of a reply up to its DONE flag; errors raise."""
        while True:
            flags, kind, handle, size = self._chunk_header()
            if handle != cookie:
                raise VirtdeckError("the NBD server answered a request that was not made")
            if kind & _REPLY_ERROR_BIT:
                self._raise_error(size)
            if size > limit:
                raise VirtdeckError("the NBD server sent an oversized reply")
            data = self._recv(size)
            if kind != _REPLY_NONE:
                yield kind, data
            if flags & _REPLY_FLAG_DONE:
                return

    def _chunk_header(self) -> tuple[int, int, int, int]:
        """(flags, type, cookie, payload length) of the next reply chunk."""
        header = self._recv(4)
        magic = struct.unpack(">I", header)[0]
        if magic == _SIMPLE_MAGIC:  # only allowed for errors once structured replies are on
            error = struct.unpack(">IQ", self._recv(12))[0]
            raise VirtdeckError(f"the NBD server answered with a simple reply (error {error})")
        if magic != _STRUCTURED_MAGIC:
            raise VirtdeckError("the NBD server sent a malformed reply")
        return _CHUNK.unpack(self._recv(_CHUNK.size))

    def _raise_error(self, size: int) -> None:
        if not 6 <= size <= _MAX_ERROR_CHUNK:
            raise VirtdeckError("the NBD server sent a malformed error")
        data = self._recv(size)
        error, length = struct.unpack(">IH", data[:6])
        message = data[6 : 6 + length].decode(errors="replace")
        raise VirtdeckError(one_line(f"the NBD server failed a request (error {error}): {message}"))

    def _send_request(self, command: int, offset: int, length: int) -> int:
        self._cookie += 1
        with _socket_errors():
            self._sock.sendall(
                _REQUEST.pack(_REQUEST_MAGIC, 0, command, self._cookie, offset, length)
            )
        return self._cookie

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise VirtdeckError(f"[{offset}, +{length}) is outside the export ({self.size} bytes)")

    def _recv(self, length: int) -> bytes:
        buffer = bytearray(length)
        self._recv_into(memoryview(buffer))
        return bytes(buffer)

    def _recv_into(self, view: memoryview) -> None:
        while view:
            with _socket_errors():
                count = self._sock.recv_into(view)
            if count == 0:
                raise VirtdeckError("the NBD server closed the connection")
            view = view[count:]


@contextmanager
def _socket_errors() -> Iterator[None]:
    """A failed or timed-out send or receive as a VirtdeckError."""
    try:
        yield
    except OSError as exc:
        raise VirtdeckError(f"the NBD connection failed: {exc.strerror or exc}") from exc


class _Read:
    """A READ in flight: where it starts, its length, the buffer it lands in, and the parts of
    it the reply's chunks have covered so far."""

    __slots__ = ("buffer", "covered", "length", "offset")

    def __init__(self, offset: int, length: int, buffer: WritableBuffer) -> None:
        self.offset, self.length, self.buffer = offset, length, buffer
        self.covered: list[tuple[int, int]] = []

    def cover(self, at: int, size: int) -> None:
        """A chunk holds [at, at + size) of the read, which must lie within it (and hold
        something: empty chunks would let a server grow the list without end)."""
        if at < 0 or size <= 0 or at + size > self.length:
            raise VirtdeckError("the NBD server sent data outside the range asked for")
        self.covered.append((at, at + size))

    def check_covered(self) -> None:
        """The chunks covered the whole read, each byte once."""
        reached = 0
        for start, end in sorted(self.covered):
            if start != reached:
                break
            reached = end
        else:
            if reached == self.length:
                return
        raise VirtdeckError("the NBD server's reply did not cover the range asked for")


def _merged(extents: list[Extent]) -> list[Extent]:
    """Adjacent extents with the same flags as one."""
    merged: list[Extent] = []
    for extent in extents:
        if merged and merged[-1].flags == extent.flags:
            last = merged.pop()
            extent = Extent(last.offset, last.length + extent.length, extent.flags)
        merged.append(extent)
    return merged
