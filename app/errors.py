"""Our own exceptions; each carries the HTTP status it maps to."""

from collections.abc import Callable


class VirtdeckError(Exception):
    """Base error: a readable message, an HTTP status, and optionally the field at fault."""

    status_code = 400
    # A refusal (authentication, permission, CSRF, throttling) rather than a failure.
    denied = False

    def __init__(
        self, message: str, *, field: str | None = None, extra: dict | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # More for the JSON answer, e.g. a guest's current state with a 409.
        self.extra = extra or {}
        self.headers: dict[str, str] = {}


class NotFound(VirtdeckError):
    """The thing asked for does not exist."""

    status_code = 404


class Conflict(VirtdeckError):
    """The request clashes with the current state (duplicate, busy, wrong state)."""

    status_code = 409


class Invalid(VirtdeckError):
    """The input is not acceptable; `field` names the culprit."""

    status_code = 422


def check_all(*checks: Callable[[], object]) -> None:
    """Run every check, not only up to the first that fails: if any raised Invalid, raise the
    first again with every field's message (the first for each) in extra["errors"], so that a
    form shows them all at once. A check's own extra["errors"] count too (checks nest)."""
    found: list[Invalid] = []
    for check in checks:
        try:
            check()
        except Invalid as exc:
            found.append(exc)
    if not found:
        return
    errors: dict[str | None, str] = {}
    for exc in found:
        for field, message in exc.extra.get("errors", {exc.field: exc.message}).items():
            errors.setdefault(field, message)
    first = found[0]
    raise Invalid(first.message, field=first.field, extra={**first.extra, "errors": errors})


class HostUnreachable(VirtdeckError):
    """The libvirt host did not answer or refused the connection."""

    status_code = 503


class GuestNotRunning(Conflict):
    """The guest is shut off: it has no screen or serial line now."""


class ConsoleUnavailable(VirtdeckError):
    """The guest has no console of the kind asked for, or the host offers no way to it."""

    status_code = 409


class ConsoleInUse(Conflict):
    """Another client holds the guest's serial console."""
