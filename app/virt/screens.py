"""Screenshots as PNG: QEMU hands libvirt a binary PPM (P6), other drivers a PNG. Both come
from the host, so the header is checked and the size bounded before anything is decoded."""

import re
import struct
import zlib

from app.errors import VirtdeckError
from app.virt.failures import one_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# "P6", width, height, maximum value, each after whitespace (comments are refused), then one
# whitespace byte before the pixels.
PPM_HEADER = re.compile(rb"P6\s+(\d{1,5})\s+(\d{1,5})\s+(\d{1,5})\s")


class BadScreenshot(VirtdeckError):
    """What the host sent is not an image virtdeck can show."""

    status_code = 502


def png_of(data: bytes, *, mime: str, max_pixels: int) -> bytes:
    """The screenshot as PNG bytes, or BadScreenshot."""
    if data.startswith(PNG_SIGNATURE):
        return data
    if mime not in ("image/x-portable-pixmap", "image/x-portable-anymap") and not data[:2] == b"P6":
        raise BadScreenshot(f"the host sent a screenshot of an unknown kind ({one_line(mime, 40)})")
    found = PPM_HEADER.match(data)
    if found is None:
        raise BadScreenshot("the host sent a screenshot with a malformed PPM header")
    width, height, maxval = (int(value) for value in found.groups())
    if not (width > 0 and height > 0 and width * height <= max_pixels):
        raise BadScreenshot(f"the host sent a screenshot of {width}x{height} pixels")
    if maxval != 255:
        raise BadScreenshot("the host sent a screenshot with more than 8 bits a colour")
    pixels = data[found.end() :]
    stride = width * 3
    if len(pixels) < stride * height:
        raise BadScreenshot("the host sent a screenshot shorter than its header says")
    rows = b"".join(
        b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height)
    )  # filter type 0 (none) before each row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 3))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
