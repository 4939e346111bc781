"""Which libvirt connection URIs virtdeck accepts; pure parsing, no libvirt calls.

A URI is checked part by part and rebuilt from those parts, so the string stored and handed to
libvirt is the one that was checked. libvirt parses differently from urllib: it splits the query
on ';' as well as '&', and unescapes '%XX' in the user, host, path and each parameter. So ';'
and '%' are refused outright, and parameter values come from a short list or a plain path.
"""

import os
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.errors import Invalid

LOCAL_SCHEMES = {"qemu", "test"}
REMOTE_SCHEMES = {"qemu+ssh", "qemu+tls", "qemu+tcp", "test+tcp"}
QEMU_PATHS = {"/system", "/session"}
TEST_DEFAULT = "/default"
# Query parameters that only tune transport checks, with the values each takes. Never
# `command`, `netcat`, `socket` or `proxy`: those make libvirt run or open whatever the URI says.
FLAG = re.compile(r"^[01]$")
FILE_PATH = re.compile(r"^/[A-Za-z0-9_./-]{0,1023}$")
ALLOWED_PARAMS = {
    "no_verify": (FLAG, "0 or 1"),
    "no_tty": (FLAG, "0 or 1"),
    "known_hosts_verify": (re.compile(r"^(normal|auto|ignore)$"), "normal, auto or ignore"),
    "keyfile": (FILE_PATH, "an absolute path of letters, digits and _ . / -"),
    "known_hosts": (FILE_PATH, "an absolute path of letters, digits and _ . / -"),
    "pkipath": (FILE_PATH, "an absolute path of letters, digits and _ . / -"),
}
UNSAFE_CHARS = frozenset("<>\"'`{}|\\^;%")
HOSTNAME = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|[0-9A-Fa-f:.]+)$")
USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _refuse(reason: str) -> Invalid:
    return Invalid(f"uri: {reason}", field="uri")


def validate_uri(raw: str, *, test_driver_dir: str = "") -> str:
    """The URI rebuilt from its checked parts, else Invalid naming the field.

    A test-driver URI names test:///default or a node file under test_driver_dir (none when
    empty); the file's real path (symlinks and '..' resolved) is what is kept.
    """
    uri = raw.strip()
    if not uri:
        raise _refuse("a libvirt URI is required, e.g. qemu:///system")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in uri):
        raise _refuse("spaces and control characters are not allowed")
    found = sorted(set(uri) & UNSAFE_CHARS)
    if found:
        raise _refuse(
            f"{' '.join(repr(ch) for ch in found)} not allowed (none of <>\"'`{{}}|\\^;% is: "
            "libvirt splits parameters at ';' and unescapes '%XX')"
        )
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed '[' around an IPv6 address
        raise _refuse("the URI is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in LOCAL_SCHEMES | REMOTE_SCHEMES:
        allowed = ", ".join(sorted(LOCAL_SCHEMES | REMOTE_SCHEMES))
        raise _refuse(f"scheme '{parts.scheme}' is not supported (use one of {allowed})")
    if parts.fragment or uri.endswith("#"):
        raise _refuse("a fragment ('#...') is not allowed")
    if parts.password is not None:
        raise _refuse("a password does not belong in the URI")
    query = _check_query(parts.query)
    if scheme in REMOTE_SCHEMES:
        netloc = _check_remote(parts)
    elif parts.netloc:
        raise _refuse(f"{scheme}:// is local; use {scheme}+ssh:// or similar for a remote host")
    else:
        netloc = ""
    if scheme.startswith("qemu"):
        if parts.path not in QEMU_PATHS:
            raise _refuse("the path of a qemu URI must be /system or /session")
        path = parts.path
    else:
        path = _check_test_path(parts.path, test_driver_dir)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _check_query(query: str) -> str:
    """The parameters joined with '&', each one checked."""
    if not query:
        return ""
    params = []
    for param in query.split("&"):
        key, eq, value = param.partition("=")
        if not key or not eq:
            raise _refuse("the query must be name=value pairs joined by '&'")
        if key not in ALLOWED_PARAMS:
            raise _refuse(
                f"query parameter '{key}' is not allowed "
                f"(allowed: {', '.join(sorted(ALLOWED_PARAMS))})"
            )
        pattern, what = ALLOWED_PARAMS[key]
        if not pattern.match(value):
            raise _refuse(f"query parameter '{key}' must be {what}")
        params.append(f"{key}={value}")
    return "&".join(params)


def _check_remote(parts: SplitResult) -> str:
    """user@host:port, checked."""
    hostname = parts.hostname or ""
    if not hostname:
        raise _refuse("a remote URI needs a host name")
    if hostname.startswith("-") or not HOSTNAME.match(hostname):
        raise _refuse(f"host name '{hostname}' is not valid")
    try:
        port = parts.port
    except ValueError as exc:
        raise _refuse("the port is not a number from 1 to 65535") from exc
    if port == 0:
        raise _refuse("the port is not a number from 1 to 65535")
    user = parts.username
    if user is not None and not USERNAME.match(user):
        raise _refuse(f"user name '{user}' is not valid")
    host = f"[{hostname}]" if ":" in hostname else hostname
    return (f"{user}@" if user else "") + host + (f":{port}" if port else "")


def check_console_address(address: str | None) -> str | None:
    """A host name or IP address at which virtdeck reaches a host's VNC servers, else Invalid
    naming the field; None for none."""
    address = (address or "").strip()
    if not address:
        return None
    if address.startswith("-") or not HOSTNAME.match(address):
        raise Invalid(
            f"console_address: '{address[:64]}' is not a host name or IP address",
            field="console_address",
        )
    return address


def _check_test_path(path: str, test_driver_dir: str) -> str:
    """/default, or the real path of a node file under test_driver_dir."""
    if path == TEST_DEFAULT:
        return path
    if not path.startswith("/") or path == "/":
        raise _refuse("a test URI needs a path: test:///default or a node file")
    if not test_driver_dir:
        raise _refuse(
            "test-driver files are turned off; use test:///default, or set "
            "VIRTDECK_TEST_DRIVER_DIR to allow node files under that directory"
        )
    directory = os.path.realpath(test_driver_dir)
    real = os.path.realpath(path)
    if real == directory or os.path.commonpath([real, directory]) != directory:
        raise _refuse(f"a test-driver node file must be under {directory}")
    return real


def is_local(uri: str) -> bool:
    """Whether the URI names this machine's own libvirtd (no host part, no transport)."""
    parts = urlsplit(uri)
    return "+" not in parts.scheme and not parts.hostname


@dataclass(frozen=True)
class SshTarget:
    """How a qemu+ssh URI reaches its host: user, port, and the key and known_hosts files it
    names (None: ssh's defaults for each)."""

    user: str | None
    host: str
    port: int | None
    keyfile: str | None
    known_hosts: str | None


def transport(uri: str) -> str:
    """How the URI reaches its host: local, ssh, tcp or tls."""
    parts = urlsplit(uri)
    return parts.scheme.partition("+")[2] or ("local" if not parts.hostname else "tcp")


def ssh_target(uri: str) -> SshTarget:
    """The SSH side of a (validated) qemu+ssh URI."""
    parts = urlsplit(uri)
    params = dict(param.partition("=")[::2] for param in parts.query.split("&") if param)
    return SshTarget(
        user=parts.username,
        host=parts.hostname or "",
        port=parts.port,
        keyfile=params.get("keyfile"),
        known_hosts=params.get("known_hosts"),
    )
