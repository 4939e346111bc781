"""Consoles through virtdeck, as users run them: `virtdeck serve` with its worker process (the
layout of `make run`), a real guest on the local libvirtd (tests/console_guest.py), reached as a
local host and as a qemu+ssh host (a private sshd on 127.0.0.1), against the fastest
alternative: QEMU's VNC port, and `virsh console`'s stream, opened directly.

Prints, per route:
- serial: keystroke to echo, p50 and p95 of 200 keys (a shell echoes each);
- screen: time from the WebSocket's opening to the first full frame (RFB, raw encoding);
- screen: full frames per second and MB/s, 30 non-incremental raw updates in a row;
- with ten screens streaming at once: the guest list's p95 from the API, and their total MB/s;
- the screenshot API, p50 of 5, each past the 2 s cache.

    flock /tmp/virtdeck-libvirtd.lock .venv/bin/python bench/console.py
"""

import asyncio
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Row, p95, print_table  # noqa: E402
from tests.console_guest import ConsoleGuest, console_guest, domain_type  # noqa: E402
from tests.consoles import run  # noqa: E402
from tests.libvirtd import SYSTEM_URI, virsh  # noqa: E402
from tests.serve import Server, running_server  # noqa: E402
from tests.sshd import sshd_for_libvirt  # noqa: E402

KEYS = 200
FRAMES = 30
STREAMS = 10

Recv = Callable[[int], Awaitable[bytes]]
Send = Callable[[bytes], Awaitable[None]]


class Exact:
    """Exactly n bytes at a time from a source of byte chunks."""

    def __init__(self, chunk: Callable[[], Awaitable[bytes]]) -> None:
        self._chunk = chunk
        self._buffer = b""

    async def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += await self._chunk()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


async def rfb_frames(recv: Recv, send: Send, frames: int) -> tuple[float, float, int]:
    """Handshake (no auth), then `frames` full raw updates: seconds to the first, seconds for
    the rest, and bytes of one frame."""
    started = time.monotonic()
    assert await recv(12) == b"RFB 003.008\n"
    await send(b"RFB 003.008\n")
    count = (await recv(1))[0]
    assert 1 in await recv(count), "the VNC server asks for a password"
    await send(b"\x01")
    assert await recv(4) == b"\0\0\0\0"
    await send(b"\x01")  # shared
    width, height = struct.unpack(">HH", await recv(4))
    pixel = await recv(16)
    await recv(struct.unpack(">I", await recv(4))[0])
    await send(struct.pack(">BBHi", 2, 0, 1, 0))  # raw encoding only

    async def frame() -> int:
        await send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        assert (await recv(1))[0] == 0
        await recv(1)
        size = 0
        for _ in range(struct.unpack(">H", await recv(2))[0]):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", await recv(12))
            if encoding == 0:
                await recv(w * h * pixel[0] // 8)
                size += w * h * pixel[0] // 8
        return size

    size = await frame()
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(frames):
        await frame()
    return first, time.monotonic() - started, size


async def over_websocket(url: str, token: str, work):
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        return await work(Exact(socket.recv), socket.send)


async def over_tcp(port: int, work):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    try:
        return await work(Exact(lambda: reader.read(65536)), send)
    finally:
        writer.close()


async def echo_times(recv: Recv, send: Send) -> list[float]:
    """Keystroke to echo, KEYS times (a line of letters, erased at the end)."""
    await send(b"\x15")  # an empty line to start from
    await asyncio.sleep(0.5)
    times = []
    for i in range(KEYS):
        key = bytes([97 + i % 26])
        started = time.monotonic()
        await send(key)
        while (await recv(1)) != key:
            pass
        times.append(time.monotonic() - started)
    await send(b"\x15")
    return times


class VirshConsole:
    """`virsh console`'s stream for the same guest, as the direct alternative for serial."""

    def __init__(self, name: str) -> None:
        self.process = subprocess.Popen(
            ["script", "-qfc", f"virsh -c {SYSTEM_URI} console --force {name}", "/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    async def chunk(self) -> bytes:
        return await asyncio.to_thread(self.process.stdout.read1, 65536)

    async def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def vnc_port(guest: ConsoleGuest) -> int:
    graphics = ET.fromstring(virsh("dumpxml", guest.name)).find("devices/graphics")
    return int(graphics.get("port"))


def ticket(server: Server, guest: ConsoleGuest, kind: str) -> str:
    issued = server.api(
        "POST", f"/guests/{guest.uuid}/console/tickets", json={"kind": kind, "takeover": True}
    )
    issued.raise_for_status()
    return server.url.replace("http://", "ws://") + issued.json()["url"]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def measure_route(server: Server, guest: ConsoleGuest, label: str) -> list[Row]:
    token = server.token or ""
    times = run(over_websocket(ticket(server, guest, "serial"), token, echo_times))
    first, rest, size = run(
        over_websocket(ticket(server, guest, "vnc"), token, lambda r, s: rfb_frames(r, s, FRAMES))
    )
    rows = [
        Row(
            f"{label}: serial key to echo, p50 / p95",
            (ms(statistics.median(times)), ms(p95(times))),
        ),
        Row(f"{label}: screen, open to first frame", ms(first)),
        Row(
            f"{label}: screen, full frames",
            f"{FRAMES / rest:.0f}/s, {FRAMES * size / rest / 1e6:.0f} MB/s",
        ),
    ]
    return rows


def measure_direct(guest: ConsoleGuest) -> list[Row]:
    console = VirshConsole(guest.name)
    try:
        times = run(echo_times(Exact(console.chunk), console.send))
    finally:
        console.close()
    first, rest, size = run(over_tcp(vnc_port(guest), lambda r, s: rfb_frames(r, s, FRAMES)))
    return [
        Row(
            "direct: virsh console, key to echo, p50 / p95",
            (ms(statistics.median(times)), ms(p95(times))),
        ),
        Row("direct: QEMU's VNC port, open to first frame", ms(first)),
        Row(
            "direct: QEMU's VNC port, full frames",
            f"{FRAMES / rest:.0f}/s, {FRAMES * size / rest / 1e6:.0f} MB/s",
        ),
    ]


def measure_load(server: Server, guest: ConsoleGuest) -> list[Row]:
    """Ten screens streaming full frames while the guest list is asked for."""
    token = server.token or ""
    urls = [ticket(server, guest, "vnc") for _ in range(STREAMS)]

    async def load() -> tuple[list, list[float]]:
        streams = asyncio.gather(
            *(over_websocket(u, token, lambda r, s: rfb_frames(r, s, FRAMES)) for u in urls)
        )
        timings = []
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
            while not streams.done():
                started = time.monotonic()
                (await client.get(f"{server.url}/api/v1/guests")).raise_for_status()
                timings.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
        return await streams, timings

    started = time.monotonic()
    results, timings = run(load())
    took = time.monotonic() - started
    total = sum(FRAMES * size for _f, _r, size in results)
    return [
        Row(f"{STREAMS} screens streaming: total", f"{total / took / 1e6:.0f} MB/s"),
        Row(
            f"{STREAMS} screens streaming: guest list p50 / p95",
            (ms(statistics.median(timings)), ms(p95(timings))),
        ),
    ]


def measure_screenshots(server: Server, guest: ConsoleGuest) -> Row:
    times = []
    for _ in range(5):
        time.sleep(2.1)  # past the cache: each one is taken afresh
        started = time.monotonic()
        server.api("GET", f"/guests/{guest.uuid}/screenshot").raise_for_status()
        times.append(time.monotonic() - started)
    return Row("screenshot API, taken afresh", ms(statistics.median(times)))


def main() -> None:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vd-bench-console-") as tmp:
        work = Path(tmp)
        (work / "guest").mkdir()
        (work / "sshd").mkdir()
        with console_guest(work / "guest") as guest:
            rows += measure_direct(guest)
            env = {"VIRTDECK_DEFAULT_HOST_URI": ""}
            with running_server(work / "local", env) as server:
                server.add_host("local", SYSTEM_URI)
                rows += measure_route(server, guest, "local host")
                rows += measure_load(server, guest)
                rows.append(measure_screenshots(server, guest))
            with (
                sshd_for_libvirt(work / "sshd") as ssh,
                running_server(work / "ssh", env) as server,
            ):
                server.add_host("over-ssh", ssh.uri())
                rows += measure_route(server, guest, "qemu+ssh host")
    print(f"guest: a busybox shell on ttyS0 and tty1, domain type {domain_type()}")
    print_table(("measure", "value (p50)", "p95"), rows)


if __name__ == "__main__":
    main()
