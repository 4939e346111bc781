"""libvirt's errors as virtdeck's own (app.errors), in words safe to show: one bounded line,
with a plain sentence first for a guest that did not start."""

import contextlib
import re
from collections.abc import Iterator

import libvirt

from app.errors import Conflict, HostUnreachable, NotFound, VirtdeckError

# Without a handler libvirt prints every error to stderr as well as raising it.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
}
CONFLICT_CODES = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_FAILED}
UNREACHABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_INVALID_CONN,
}

MAX_MESSAGE = 500
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Said instead of libvirt's words when a test-driver node file fails to load: libxml2 quotes the
# line it choked on, and the file may be any the server can read.
TEST_FILE_FAILED = (
    "the test driver could not load this file "
    "(missing, unreadable or not a libvirt test-driver node XML)"
)
# libvirt's words for a disk's file it cannot open when a guest starts (by libvirt version).
MISSING_FILE = re.compile(r"Cannot access storage file|Path '.*' is not accessible")
# How much of libvirt's message about a failed start is kept (it is untrusted text).
LIBVIRT_SAYS = 300


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Untrusted text on one line of at most limit characters, without control characters."""
    text = " ".join(CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(exc: libvirt.libvirtError) -> str:
    """libvirt's message on one line of at most MAX_MESSAGE characters: it is shown to every
    viewer (as a host's last error, a job's failure) and may quote what libvirt was given."""
    return one_line(exc.get_error_message() or str(exc))


def connection_lost(exc: libvirt.libvirtError) -> bool:
    """Whether the error is the link to libvirtd failing (libvirtd stopped, the host is gone),
    not the host refusing the call."""
    return exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)


def translate(exc: libvirt.libvirtError) -> VirtdeckError:
    """Our exception for a libvirt error."""
    code = exc.get_error_code()
    message = error_message(exc)
    if code in NOT_FOUND_CODES:
        return NotFound(message)
    if code in UNREACHABLE_CODES:
        return HostUnreachable(message)
    if code in CONFLICT_CODES:
        return Conflict(message)
    return VirtdeckError(message)


@contextlib.contextmanager
def libvirt_errors() -> Iterator[None]:
    """Raise our exception (app.errors) for a libvirt error inside the block."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc


def qemu_error(message: str) -> str:
    """The useful line of a failed start, bounded and on one line: QEMU's own error line when
    libvirt passes one on, else libvirt's message."""
    # libvirt's message may be folded onto one line (translate): stop at QEMU's next line.
    found = re.search(r"qemu-system-[\w-]+: (?:error: )?(.+?)(?=\s+qemu-system-|\n|$)", message)
    return one_line(found.group(1) if found else message, LIBVIRT_SAYS)


def known_cause(said: str) -> str | None:
    """What to do about a failure whose cause virtdeck knows from libvirt's or QEMU's words."""
    if "0x10a" in said:  # IA32_ARCH_CAPABILITIES
        return (
            "This host cannot give guests the CPU feature arch-capabilities (nested KVM on"
            " AMD): give the guest the CPU mode the host page recommends."
        )
    if MISSING_FILE.search(said):
        return (
            "A disk's file is missing or unreadable on the host: restore it, or detach the disk"
            " under Hardware."
        )
    return None


def start_failed(name: str, exc: libvirt.libvirtError, *, verb: str = "start") -> VirtdeckError:
    """Our exception for a guest that did not start (or resume): a plain sentence, then
    libvirt's words."""
    error = translate(exc)
    # A file QEMU cannot open is a system error too, but one the host reported, not a lost link.
    if isinstance(error, NotFound) or (isinstance(error, HostUnreachable) and connection_lost(exc)):
        return error
    said = qemu_error(error.message)
    hint = known_cause(said)
    return Conflict(
        f"{name} could not {verb}: libvirt says: {said}.{f' {hint}' if hint else ''}",
        extra={"libvirt_error": error.message},
    )
