"""Console clients for tests: what an API client does over the console WebSockets."""

import asyncio
import re
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import websockets
from playwright.sync_api import Locator, Page, expect

T = TypeVar("T")
# How many pixels of the screen console's canvas are lit (text on the dark screen).
LIT_PIXELS = """() => {
  const canvas = document.querySelector("[data-console=vnc] canvas");
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 150) lit++;
  return lit;
}"""


def wait_for_screen(tab: Page) -> None:
    """Until the screen console's canvas shows something (over 200 lit pixels)."""
    tab.wait_for_function(f"() => ({LIT_PIXELS})() > 200")


def run(coroutine: Coroutine[object, object, T]) -> T:
    """Run a coroutine to its end in a thread of its own: Playwright's sync API keeps an event
    loop running in the test's thread, where asyncio.run() refuses to start another."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def rfb_handshake(url: str, token: str, *, hold: float = 0.0) -> bytes:
    """Open a screen console with the token, answer the VNC server's version and return the
    security types it offers; the console stays open `hold` seconds longer."""
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        banner = await asyncio.wait_for(socket.recv(), 10)
        assert banner == b"RFB 003.008\n", banner
        await socket.send(b"RFB 003.008\n")
        types = await asyncio.wait_for(socket.recv(), 10)
        await asyncio.sleep(hold)
        return types


def serial_echo(url: str, token: str, command: bytes, expected: re.Pattern[str]) -> str:
    """Send a command line to a serial console and return what came back up to the first match
    of expected (within 10 s)."""

    async def echo() -> str:
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.send(command)
            seen = b""
            deadline = time.monotonic() + 10
            while not expected.search(seen.decode(errors="replace")):
                remaining = deadline - time.monotonic()
                assert remaining > 0, seen[-400:]
                seen += await asyncio.wait_for(socket.recv(), remaining)
            return seen.decode(errors="replace")

    return run(echo())


async def closed_with(url: str, token: str, timeout: float) -> tuple[int, str, float]:
    """Open a console and wait until the server closes it: the code, the reason, and how many
    seconds that took."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    async with websockets.connect(url, additional_headers=headers) as socket:
        try:
            while True:
                await asyncio.wait_for(socket.recv(), timeout)
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
            return (
                frame.code if frame else 1006,
                frame.reason if frame else "",
                time.monotonic() - started,
            )


async def flood_unread(url: str, token: str, *, command: bytes, seconds: float) -> bytes:
    """Start a command that floods the serial console, read nothing for `seconds`, then stop it
    with Ctrl+C, ask for "flood-42" and read until it comes; what was read after the pause."""
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers, max_queue=1) as socket:
        await socket.send(command)
        await asyncio.sleep(seconds)
        await socket.send(b"\x03")
        await socket.send(b"echo flood-$((40+2))\r")
        seen = b""
        deadline = time.monotonic() + 30
        while b"flood-42" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, seen[-400:]
            seen += await asyncio.wait_for(socket.recv(), remaining)
        return seen


def console(tab: Page, kind: str) -> Locator:
    """The page's console of this kind (vnc or serial)."""
    return tab.locator(f"[data-console={kind}]")


def open_console(
    tab: Page, url: str, guest_uuid: str, kind: str, *, take_over: bool = False
) -> Locator:
    """Open the guest page and connect its console; with take_over, a serial console someone
    holds is taken over. The console, connected."""
    tab.goto(f"{url}/guests/{guest_uuid}?section=console")
    widget = console(tab, kind)
    widget.locator("button[data-do=connect]").click()
    expect(widget).not_to_have_attribute("data-state", re.compile("idle|connecting"))
    if take_over and widget.get_attribute("data-state") == "in-use":
        widget.locator("button[data-do=takeover]").click()
    expect(widget).to_have_attribute("data-state", "connected")
    return widget
