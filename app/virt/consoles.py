"""A guest's screen and serial line through libvirt: where its VNC server listens, a socket to
it on a local host, its serial console as a non-blocking stream, and screenshots."""

import contextlib
import ipaddress
import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from app.errors import (
    ConsoleInUse,
    ConsoleUnavailable,
    GuestNotRunning,
    NotFound,
    VirtdeckError,
)
from app.virt.connection import STATE_NAMES, HostConnection
from app.virt.failures import error_message, translate
from app.virt.screens import png_of
from app.virt.types import VncListen

log = logging.getLogger(__name__)
# States in which QEMU runs and so serves the screen and the serial line.
LIVE_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    }
)
# The same by the names the inventory stores.
LIVE_STATE_NAMES = frozenset(STATE_NAMES[state] for state in LIVE_STATES)
# One read of the serial stream; a screenshot larger than this many bytes is refused.
SERIAL_CHUNK = 64 * 1024
SCREENSHOT_LIMIT = 64 * 1024 * 1024


def _running_domain(conn: HostConnection, uuid: str) -> libvirt.virDomain:
    dom = conn.domain(uuid)
    try:
        state = dom.state()[0]
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc
    if state not in LIVE_STATES:
        raise GuestNotRunning("the guest is not running; start it to see its console")
    return dom


def guest_is_live(conn: HostConnection, uuid: str) -> bool:
    """Whether the guest's QEMU runs now (False also when it is gone)."""
    try:
        return conn.domain(uuid).state()[0] in LIVE_STATES
    except NotFound:
        return False
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc


def vnc_listen(conn: HostConnection, uuid: str) -> VncListen:
    """Where the running guest's VNC server listens on its host, from its live XML (read as
    untrusted: the address must be an IP address, the port a TCP port)."""
    dom = _running_domain(conn, uuid)
    try:
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc
    graphics = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    if graphics is None:
        raise ConsoleUnavailable("the guest has no VNC screen (no <graphics type='vnc'>)")
    listen = graphics.find("listen")
    if listen is not None and listen.get("type") == "socket":
        return VncListen(address=None, port=None, socket=True)
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen")
    port = graphics.get("port", "")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConsoleUnavailable("the guest's VNC server has no TCP port")
    try:
        checked = str(ipaddress.ip_address(address or "127.0.0.1"))
    except ValueError as exc:
        raise ConsoleUnavailable("the guest's VNC listen address is not an IP address") from exc
    return VncListen(address=checked, port=int(port), socket=False)


def graphics_socket_fd(conn: HostConnection, uuid: str) -> int:
    """A file descriptor of a socket to the running guest's VNC server, handed over by a local
    libvirtd (openGraphicsFD: no TCP port, no VNC password asked)."""
    dom = _running_domain(conn, uuid)
    try:
        return dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID):
            raise ConsoleUnavailable(
                f"this host does not hand over the guest's screen: {error_message(exc)}"
            ) from exc
        raise translate(exc) from exc


class SerialStream:
    """A running guest's first serial console as a non-blocking libvirt stream. It is read on
    libvirt's event loop thread as fast as the guest writes (so libvirt's own queue stays
    short): `deliver(data)` gets each chunk and must not block; `ended(reason)` is called once
    when the stream ends. close() (from any thread but libvirt's) releases the stream."""

    def __init__(
        self,
        conn: HostConnection,
        uuid: str,
        *,
        force: bool,
        deliver: Callable[[bytes], None],
        ended: Callable[[str], None],
    ) -> None:
        dom = _running_domain(conn, uuid)
        self._deliver = deliver
        self._ended = ended
        self._lock = threading.Lock()
        self._reading = True
        self._released = False
        self._conn = conn.lv
        self._stream = conn.lv.newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_SAFE
        if force:
            flags |= libvirt.VIR_DOMAIN_CONSOLE_FORCE
        try:
            dom.openConsole(None, self._stream, flags)
            self._stream.eventAddCallback(self._EVENTS, self._ready, None)
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.abort()
            raise _console_refusal(exc) from exc

    _EVENTS = (
        libvirt.VIR_STREAM_EVENT_READABLE
        | libvirt.VIR_STREAM_EVENT_ERROR
        | libvirt.VIR_STREAM_EVENT_HANGUP
    )

    def _ready(self, _stream: libvirt.virStream, events: int, _opaque: object) -> None:
        try:
            if events & libvirt.VIR_STREAM_EVENT_READABLE:
                self._read()
            if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                self._stop("the serial console closed (the guest stopped or the host is gone)")
        except Exception:  # an exception must never reach libvirt's event loop
            log.exception("relaying a serial console failed")
            self._stop("the serial console failed")

    def _read(self) -> None:
        while self._reading:
            try:
                data = self._stream.recv(SERIAL_CHUNK)
            except libvirt.libvirtError as exc:
                self._stop(f"the serial console closed: {error_message(exc)}")
                return
            if data == -2:  # nothing more for now
                return
            if not data:
                self._stop("the guest closed its serial console")
                return
            self._deliver(data)

    def _stop(self, reason: str) -> None:
        """On libvirt's thread: stop reading and say why. The stream is released by close(),
        from another thread: an abort is a round trip to the host, which would hold up every
        event and keepalive of this process meanwhile."""
        with self._lock:
            if not self._reading:
                return
            self._reading = False
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        self._ended(reason)

    def alive(self) -> bool:
        """Whether the connection carrying the stream is still open (libvirt closes it when
        the host stops answering its keepalive; the stream itself is not told)."""
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def send(self, data: bytes) -> int:
        """Write what the stream takes now; how many bytes (0 when it would block)."""
        try:
            sent = self._stream.send(data)
        except libvirt.libvirtError as exc:
            raise ConsoleUnavailable(f"the serial console closed: {error_message(exc)}") from exc
        return 0 if sent == -2 else sent

    def close(self) -> None:
        """Stop relaying and release the stream (ended() is not called); not on libvirt's
        event thread."""
        with self._lock:
            was_reading, self._reading = self._reading, False
            released, self._released = self._released, True
        if released:
            return
        if was_reading:
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()


def _console_refusal(exc: libvirt.libvirtError) -> VirtdeckError:
    """Why openConsole refused, in words for the user."""
    message = error_message(exc)
    if "active console session" in message.lower():
        return ConsoleInUse("the serial console is in use by another client (outside virtdeck)")
    if "cannot find character device" in message:
        return ConsoleUnavailable("the guest has no serial console (no <serial> or <console>)")
    if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INTERNAL_ERROR):
        return ConsoleUnavailable(f"the guest's serial console: {message}")
    return translate(exc)


def screenshot(conn: HostConnection, uuid: str, *, max_pixels: int) -> bytes:
    """The running guest's screen now, as PNG (libvirt hands over QEMU's PPM, or a PNG)."""
    dom = _running_domain(conn, uuid)
    stream = conn.lv.newStream(0)
    try:
        mime = dom.screenshot(stream, 0, 0)
        data = bytearray()
        while True:
            chunk = stream.recv(1024 * 1024)
            if not chunk:
                break
            data += chunk
            if len(data) > SCREENSHOT_LIMIT:
                raise ConsoleUnavailable("the guest's screenshot is too large")
        stream.finish()
    except libvirt.libvirtError as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID):
            raise ConsoleUnavailable(f"no screenshot of this guest: {error_message(exc)}") from exc
        raise translate(exc) from exc
    except VirtdeckError:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return png_of(bytes(data), mime=mime, max_pixels=max_pixels)
