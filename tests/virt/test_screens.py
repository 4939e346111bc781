"""Screenshots from a host become PNG, and what is not a sane PPM (or PNG) is refused before
anything is decoded or allocated."""

import struct
import zlib

import pytest

from app.virt.screens import PNG_SIGNATURE, BadScreenshot, png_of

PPM = "image/x-portable-pixmap"


def pixels_of(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the RGB bytes of a PNG made by png_of (filter 0 on every row)."""
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])
    idat_length = struct.unpack(">I", png[33:37])[0]
    assert png[37:41] == b"IDAT"
    rows = zlib.decompress(png[41 : 41 + idat_length])
    stride = width * 3 + 1
    assert all(rows[r * stride] == 0 for r in range(height))
    return width, height, b"".join(rows[r * stride + 1 : (r + 1) * stride] for r in range(height))


def test_a_ppm_becomes_a_png_with_the_same_pixels() -> None:
    pixels = bytes(range(18))  # 3 x 2 pixels
    png = png_of(b"P6\n3 2\n255\n" + pixels, mime=PPM, max_pixels=100)

    assert pixels_of(png) == (3, 2, pixels)


def test_a_png_is_passed_on_as_it_is() -> None:
    png = PNG_SIGNATURE + b"rest"

    assert png_of(png, mime="image/png", max_pixels=100) == png


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"P5\n3 2\n255\n" + bytes(6), "malformed"),
        (b"P6\n# a comment\n3 2\n255\n" + bytes(18), "malformed"),
        (b"P6\n3 2\n65535\n" + bytes(36), "8 bits"),
        (b"P6\n3 2\n255\n" + bytes(17), "shorter"),
        (b"P6\n0 2\n255\n", "0x2 pixels"),
        (b"P6\n99999 99999\n255\n" + bytes(18), "99999x99999 pixels"),
        (b"GIF89a", "unknown kind"),
    ],
)
def test_what_is_not_a_sane_image_is_refused(data: bytes, words: str) -> None:
    mime = "image/gif" if data.startswith(b"GIF") else PPM
    with pytest.raises(BadScreenshot) as refused:
        png_of(data, mime=mime, max_pixels=4096 * 4096)

    assert words in refused.value.message
