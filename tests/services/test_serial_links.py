"""A serial console whose browser falls behind holds a bounded queue: what does not fit is
skipped, and the terminal is told how much before the next output."""

import asyncio

from app.services.serial_links import MAX_PENDING, SKIPPED, SerialLink

CHUNK = b"x" * 65536


def test_output_past_the_queue_is_skipped_and_the_terminal_is_told_how_much() -> None:
    async def flood_then_read() -> tuple[list[bytes | str], bytes | str]:
        link = SerialLink(asyncio.get_running_loop())
        for _ in range(MAX_PENDING + 10):  # as libvirt's event thread delivers them
            await asyncio.to_thread(link.deliver, CHUNK)
        queued = [await link.recv() for _ in range(MAX_PENDING)]
        await asyncio.to_thread(link.deliver, b"after the flood")
        return queued, await link.recv()

    queued, after = asyncio.run(flood_then_read())

    assert queued == [CHUNK] * MAX_PENDING
    assert after == SKIPPED.format(10 * len(CHUNK)).encode() + b"after the flood"
    assert b"655360 bytes of output skipped: the browser fell behind" in after


def test_the_reason_a_console_ended_follows_its_output() -> None:
    async def end() -> list[bytes | str]:
        link = SerialLink(asyncio.get_running_loop())
        await asyncio.to_thread(link.deliver, b"last words")
        await asyncio.to_thread(link.ended, "the guest closed its serial console")
        return [await link.recv(), await link.recv()]

    assert asyncio.run(end()) == [b"last words", "the guest closed its serial console"]
