"""Which libvirt connection URIs virtdeck accepts; pure parsing, no libvirt calls."""

import re
from urllib.parse import SplitResult, parse_qsl, urlsplit

from app.errors import Invalid

LOCAL_SCHEMES = {"qemu", "test"}
REMOTE_SCHEMES = {"qemu+ssh", "qemu+tls", "qemu+tcp", "test+tcp"}
QEMU_PATHS = {"/system", "/session"}
# Query parameters that only tune transport checks. Never `command`, `netcat`, `socket` or
# `proxy`: those make libvirt run or open whatever the URI says.
ALLOWED_PARAMS = {"no_verify", "no_tty", "keyfile", "known_hosts", "known_hosts_verify", "pkipath"}
UNSAFE_CHARS = frozenset("<>\"'`{}|\\^")
HOSTNAME = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|[0-9A-Fa-f:.]+)$")
USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _refuse(reason: str) -> Invalid:
    return Invalid(f"uri: {reason}", field="uri")


def validate_uri(raw: str) -> str:
    """Return the URI stripped if virtdeck accepts it, else raise Invalid naming the field."""
    uri = raw.strip()
    if not uri:
        raise _refuse("a libvirt URI is required, e.g. qemu:///system")
    if any(ord(ch) < 33 or ord(ch) == 127 or ch in UNSAFE_CHARS for ch in uri):
        raise _refuse("spaces, control characters and any of <>\"'`{}|\\^ are not allowed")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in LOCAL_SCHEMES | REMOTE_SCHEMES:
        allowed = ", ".join(sorted(LOCAL_SCHEMES | REMOTE_SCHEMES))
        raise _refuse(f"scheme '{parts.scheme}' is not supported (use one of {allowed})")
    if parts.fragment:
        raise _refuse("a fragment ('#...') is not allowed")
    if parts.password is not None:
        raise _refuse("a password does not belong in the URI")
    _check_query(parts.query)
    if scheme in REMOTE_SCHEMES:
        _check_remote(parts)
    elif parts.netloc:
        raise _refuse(f"{scheme}:// is local; use {scheme}+ssh:// or similar for a remote host")
    if scheme.startswith("qemu") and parts.path not in QEMU_PATHS:
        raise _refuse("the path of a qemu URI must be /system or /session")
    if scheme.startswith("test") and not parts.path.startswith("/"):
        raise _refuse("a test URI needs a path, e.g. test:///default")
    return uri


def _check_query(query: str) -> None:
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise _refuse("the query string is malformed") from exc
    for key, _value in params:
        if key not in ALLOWED_PARAMS:
            raise _refuse(
                f"query parameter '{key}' is not allowed "
                f"(allowed: {', '.join(sorted(ALLOWED_PARAMS))})"
            )


def _check_remote(parts: SplitResult) -> None:
    hostname = parts.hostname or ""
    if not hostname:
        raise _refuse("a remote URI needs a host name")
    if hostname.startswith("-") or not HOSTNAME.match(hostname):
        raise _refuse(f"host name '{hostname}' is not valid")
    try:
        parts.port  # noqa: B018 - urllib validates the port when it is read
    except ValueError as exc:
        raise _refuse("the port is not a number from 1 to 65535") from exc
    if parts.username is not None and not USERNAME.match(parts.username):
        raise _refuse(f"user name '{parts.username}' is not valid")


def is_local(uri: str) -> bool:
    """Whether the URI names this machine's own libvirtd (no host part, no transport)."""
    parts = urlsplit(uri)
    return "+" not in parts.scheme and not parts.hostname
