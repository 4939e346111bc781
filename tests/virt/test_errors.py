"""libvirt's error messages as virtdeck passes them on: one line, bounded."""

import pytest

from app.errors import VirtdeckError
from app.virt.connection import MAX_MESSAGE, HostConnection, libvirt_errors


def test_a_long_multi_line_libvirt_error_becomes_one_bounded_line() -> None:
    conn = HostConnection("test:///default", keepalive=(3, 3), on_close=lambda _r: None)
    try:
        with pytest.raises(VirtdeckError) as failed, libvirt_errors():
            # libxml2 quotes the line it choked on, control characters and all
            conn.lv.defineXML("not xml \x1b[31m " * 400)
    finally:
        conn.close()

    message = failed.value.message
    assert "Start tag expected" in message
    assert len(message) == MAX_MESSAGE
    assert message.endswith("…")
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in message)
