"""libvirt's error messages as virtdeck passes them on: one line, bounded."""

import pytest

from app.errors import VirtdeckError
from app.virt.connection import HostConnection
from app.virt.failures import MAX_MESSAGE, libvirt_errors, qemu_error


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


@pytest.mark.parametrize("fold", ["\n", " "])
def test_a_failed_start_keeps_qemus_own_error_line_folded_or_not(fold: str) -> None:
    said = (
        "internal error: qemu unexpectedly closed the monitor: 2026-11-27T12:36:14Z "
        f"qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69{fold}"
        "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed."
    )

    assert qemu_error(said) == "failed to set MSR 0x10a to 0x69"
    assert (
        qemu_error("Cannot access storage file '/x.qcow2'")
        == "Cannot access storage file '/x.qcow2'"
    )
    assert len(qemu_error("x" * 5000)) == 300
