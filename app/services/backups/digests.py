"""The digests of backup files: which algorithm new backups hash with (VIRTDECK_BACKUP_HASH, or
auto: whichever hashes faster on this machine, measured once; blake3 is several times faster
than sha256 on a CPU without SHA extensions, and was still about 2.5 times faster on one with
them), a hasher for each, and the digest a file entry records, read back as untrusted input
(anyone who can write the backup directory or the database can change an entry)."""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import blake3

from app.config import Settings
from app.errors import Conflict

SHA256, BLAKE3 = "sha256", "blake3"
HASHERS: dict[str, Callable[[], "Hasher"]] = {SHA256: hashlib.sha256, BLAKE3: blake3.blake3}
ALGORITHMS = tuple(HASHERS)
HEX_DIGITS = 64  # both are 32-byte digests
HEX = frozenset("0123456789abcdef")
CPUINFO = Path("/proc/cpuinfo")
# The cpuinfo line listing a CPU's extensions, and the one that means SHA-256 in hardware:
# x86's "flags" (sha_ni), aarch64's "Features" (sha2).
SHA_FLAGS = {"flags": "sha_ni", "Features": "sha2"}
SAMPLE = 32 << 20  # bytes auto hashes with each algorithm to time it


class Hasher(Protocol):
    """hashlib's and blake3's common interface."""

    def update(self, data: bytes | memoryview, /) -> Any: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class HashChoice:
    """The algorithm new backups hash their files with, and why (for the operator)."""

    algorithm: str
    reason: str


def has_sha_extensions(cpuinfo: str) -> bool:
    """Whether every CPU the /proc/cpuinfo text lists has SHA-256 instructions."""
    found = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        flag = SHA_FLAGS.get(key.strip())
        if flag is not None:
            found.append(flag in value.split())
    return bool(found) and all(found)


def hash_rates(size: int = SAMPLE) -> dict[str, float]:
    """Bytes a second each algorithm hashes on this machine (the best of two tries on size
    bytes)."""
    data = bytes(size)
    rates = {}
    for algorithm, make in HASHERS.items():
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            make().update(data)
            best = min(best, time.perf_counter() - started)
        rates[algorithm] = size / max(best, 1e-9)
    return rates


def auto_hash(cpuinfo: str, rates: dict[str, float]) -> HashChoice:
    """What auto picks on a machine with this /proc/cpuinfo text where the algorithms hash at
    these rates (bytes a second): the faster one."""
    algorithm = max(ALGORITHMS, key=lambda a: rates[a])
    extensions = "with" if has_sha_extensions(cpuinfo) else "without"
    measured = ", ".join(f"{a} {rates[a] / 1e9:.1f} GB/s" for a in ALGORITHMS)
    return HashChoice(
        algorithm, f"auto: the faster here ({measured}; a CPU {extensions} SHA extensions)"
    )


@cache
def _auto_here() -> HashChoice:
    """auto_hash of this machine, found once per process (no /proc/cpuinfo: no extensions)."""
    try:
        cpuinfo = CPUINFO.read_text()
    except OSError:
        cpuinfo = ""
    return auto_hash(cpuinfo, hash_rates())


def backup_hash(settings: Settings) -> HashChoice:
    """The algorithm for new backups' files: the setting's, or for auto this CPU's best."""
    if settings.backup_hash != "auto":
        return HashChoice(settings.backup_hash, "set by VIRTDECK_BACKUP_HASH")
    return _auto_here()


def hasher(algorithm: str) -> Hasher:
    """A new hasher of algorithm (one of ALGORITHMS)."""
    return HASHERS[algorithm]()


def recorded(entry: dict[str, Any]) -> tuple[str, str]:
    """(algorithm, hex digest) a backup file's entry records: exactly one of sha256 or blake3,
    as 64 lower-case hex digits; else Conflict naming the file and what is wrong."""
    named = [a for a in ALGORITHMS if a in entry]
    if len(named) != 1:
        what = "no digest" if not named else "more than one digest"
        raise Conflict(f"{entry.get('name')} ({what} recorded: one of {', '.join(ALGORITHMS)})")
    algorithm = named[0]
    value = entry[algorithm]
    if not isinstance(value, str) or len(value) != HEX_DIGITS or not set(value) <= HEX:
        raise Conflict(f"{entry.get('name')} (its {algorithm} is not {HEX_DIGITS} hex digits)")
    return algorithm, value


def shown(entry: dict[str, Any]) -> tuple[str, str] | None:
    """recorded(entry), or None when it records no valid digest: what pages and the API show."""
    try:
        return recorded(entry)
    except Conflict:
        return None
