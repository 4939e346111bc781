"""Chains of backups in tests: a full backup and the incrementals built on it written into the
backup directory and the database as the service leaves them (the test driver takes no backups),
and a byte flipped in one of their files."""

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.services.backups.files import make_private_dirs, write_manifest
from tests.backups import WEB_1, add_backup

CHANGED = 4096
IMAGE = bytes(range(256)) * 64  # 16 KiB
FULL_REASON = "checkpoint virtdeck-12 was missing on the host"


def _entry(name: str, kind: str, fmt: str | None, data: bytes) -> dict:
    """A file's entry as the manifest lists it."""
    entry = {"name": name, "kind": kind, "target": "vda" if kind == "disk" else None,
             "format": fmt, "size": len(data),
             "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    if fmt == "delta":
        entry["extents"] = [[8192, len(data)]]
    return entry


def stored_chain(
    sessions: sessionmaker[Session],
    root: Path,
    host: dict,
    *,
    length: int = 3,
    guest_uuid: str = WEB_1,
    guest_name: str = "web-1",
    full_reason: str | None = None,
    age: timedelta = timedelta(0),
) -> list[int]:
    """A full backup and length - 1 incrementals, each built on the one before and an hour
    younger (the newest `age` older than a day), with their files and manifests under root;
    their ids, oldest first."""
    ids: list[int] = []
    for n in range(length):
        disk = ("disk-vda.delta", "disk", "delta", IMAGE[:CHANGED]) if ids else (
            "disk-vda.qcow2", "disk", "qcow2", IMAGE
        )  # fmt: skip
        files = [_entry("domain.xml", "domain-xml", None, b"<domain/>"), _entry(*disk)]
        path = f"{host['name']}/{guest_uuid}/{uuid.uuid4().hex}"
        directory = make_private_dirs(root, path)
        (directory / "domain.xml").write_bytes(b"<domain/>")
        (directory / disk[0]).write_bytes(disk[3])
        chain = (
            {"kind": "incremental", "parent_id": ids[-1], "changed_bytes": CHANGED}
            if ids
            else {"kind": "full", "full_reason": full_reason}
        )
        ids.append(
            add_backup(
                sessions,
                host,
                guest_uuid=guest_uuid,
                guest_name=guest_name,
                path=path,
                files=files,
                manifest_sha256=write_manifest(directory, {"files": files}),
                age=age + timedelta(hours=length - 1 - n),
                checkpoint=f"virtdeck-{n}",
                size_bytes=sum(f["size"] for f in files),
                **chain,
            )
        )
    return ids


def flip_byte(root: Path, path: str, name: str) -> None:
    """Change one byte of a backup's file."""
    with open(root / path / name, "r+b") as handle:
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
