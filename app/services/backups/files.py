"""The backup directory: where it is, its modes (for the service user alone), a backup's manifest,
its removal, and checking its files against the digests recorded when it was taken (each by
the algorithm its entry names)."""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from app.config import Settings
from app.errors import Conflict, VirtdeckError
from app.services.backups.digests import SHA256, hasher, recorded

PART = ".part"
MANIFEST = "manifest.json"
READ_CHUNK = 4 << 20
# Backups hold whole disks and domain XML with graphics passwords: for the service user alone,
# whatever the umask.
DIR_MODE = 0o700
FILE_MODE = 0o600


def backup_root(settings: Settings) -> Path:
    """The backup directory, made if missing, and for the service user alone: backups written
    by older versions kept 0644/0755 modes, and a closed root keeps others out of them too."""
    root = Path(settings.backup_dir).resolve()
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    root.chmod(DIR_MODE)
    return root


def private_file(path: Path) -> BinaryIO:
    """A new (or emptied) file open for writing, readable by the service user alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the file may have been there with other modes
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def make_private_dirs(root: Path, relative: str) -> Path:
    """Make root/relative and the directories between them, each for the service user alone."""
    path = root
    for part in Path(relative).parts:
        path = path / part
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        path.chmod(DIR_MODE)
    return path


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """manifest.json, complete or not at all; the sha256 of its bytes."""
    part = directory / (MANIFEST + PART)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with private_file(part) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, directory / MANIFEST)
    return hashlib.sha256(data).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    """The backup's manifest.json."""
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise Conflict(f"the backup's manifest.json cannot be read: {exc}") from exc


def remove_tree(root: Path, relative: str) -> None:
    """Remove a backup's directory (never anything outside the backup directory), and its
    guest's and host's directories when they are left empty."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root not in target.parents:
        raise VirtdeckError(f"refusing to remove {target}: outside the backup directory")
    shutil.rmtree(target, ignore_errors=True)
    for parent in (target.parent, target.parent.parent):
        if parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def digest_of(path: Path, algorithm: str) -> str:
    """The file's digest (hex) by algorithm."""
    digest = hasher(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The file's sha256 (manifest.json's digest, whatever its backup files use)."""
    return digest_of(path, SHA256)


def mismatches(
    directory: Path, files: list[dict[str, Any]], *, manifest_sha256: str | None = None
) -> list[str]:
    """The files whose content no longer matches the recorded digest (by the algorithm each
    entry names), that are missing, or whose entry records no valid digest; manifest.json among
    them when its sha256 was recorded."""
    bad = []
    for entry in files:
        path = directory / entry["name"]
        try:
            algorithm, expected = recorded(entry)
        except Conflict as exc:
            bad.append(exc.message)
            continue
        if not path.is_file():
            bad.append(f"{entry['name']} (missing)")
        elif path.stat().st_size != entry["size"] or digest_of(path, algorithm) != expected:
            bad.append(entry["name"])
    if manifest_sha256 is not None:
        manifest = directory / MANIFEST
        if not manifest.is_file():
            bad.append(f"{MANIFEST} (missing)")
        elif sha256_of(manifest) != manifest_sha256:
            bad.append(MANIFEST)
    return bad


def read_checked(path: Path, entry: dict[str, Any]) -> bytes | None:
    """A small backup file's bytes, read once (never more than its recorded size), if they are
    the recorded ones; None if they are not, it cannot be read or its entry records no valid
    digest."""
    try:
        algorithm, expected = recorded(entry)
        with open(path, "rb") as handle:
            data = handle.read(entry["size"] + 1)
    except (Conflict, OSError):
        return None
    digest = hasher(algorithm)
    digest.update(data)
    if len(data) != entry["size"] or digest.hexdigest() != expected:
        return None
    return data
