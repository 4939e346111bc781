"""Backups and restores in tests: start one through the API, wait for it, see what it left; or
write a backup's record as the service leaves it."""

import json
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Backup
from app.models.base import utcnow
from app.services.backups.deltas import EXTENTS, materialize
from tests.polling import finished_job, until

# A backup or restore of a real disk may take a while on a busy machine.
BACKUP_TIMEOUT = 120
WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running, on alpha (tests/data/node-alpha.xml)
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off, on alpha
GIB = 1 << 30


def start_backup(client: TestClient, uuid: str) -> dict:
    """Start a backup; the API's answer (the backup and its job)."""
    started = client.post(f"/api/v1/guests/{uuid}/backups")
    assert started.status_code == 202, started.text
    return started.json()


def back_up(client: TestClient, uuid: str) -> dict:
    """Take a backup through the API and wait for it; the backup record afterwards."""
    started = start_backup(client, uuid)
    job = finished_job(client, started["job"]["id"], timeout=BACKUP_TIMEOUT)
    assert job["status"] == "succeeded", job
    return client.get(f"/api/v1/backups/{started['backup']['id']}").json()


def restore(client: TestClient, backup_id: int, **body) -> dict:
    """Restore through the API and wait; the job afterwards."""
    started = client.post(f"/api/v1/backups/{backup_id}/restore", json=body)
    assert started.status_code == 202, started.text
    return finished_job(client, started.json()["job"]["id"], timeout=BACKUP_TIMEOUT)


def wait_until_copying(client: TestClient, job_id: int) -> None:
    """Until the job has copied something; fails if it ends first."""

    def copying() -> bool:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return job["status"] == "running" and job["progress"] > 0

    until(copying, timeout=30, interval=0.05, what="the backup never got going")


def disk_as_image(client: TestClient, backup: dict, work: Path) -> tuple[Path, str]:
    """The backup's (first) disk as an image to compare with qemu-img: its file as stored, or
    a disk kept as extents (a running guest's) rebuilt as raw in work; (path, format)."""
    directory = Path(client.app.state.settings.backup_dir) / backup["path"]
    manifest = json.loads((directory / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["kind"] == "disk")
    path = directory / entry["name"]
    if entry["format"] != EXTENTS:
        return path, entry["format"]
    image = work / f"{backup['id']}-{entry['target']}.raw"
    materialize([(path, entry)], image, capacity=entry["capacity"], out_fmt="raw")
    return image, "raw"


def backup_files_left(root: Path) -> list[Path]:
    """Every file under the backup directory."""
    return [p for p in root.rglob("*") if p.is_file()]


def add_backup(
    sessions: sessionmaker[Session],
    host: dict,
    *,
    guest_uuid: str = WEB_1,
    guest_name: str = "web-1",
    status: str = "succeeded",
    age: timedelta = timedelta(0),
    seconds: float = 75,
    **fields,
) -> int:
    """A backup record as the service leaves it; its id."""
    started = utcnow() - timedelta(days=1) - age
    row = {
        "host_id": host["id"], "host_name": host["name"], "guest_uuid": guest_uuid,
        "guest_name": guest_name, "started_by": "ops", "started_at": started,
        "finished_at": None if status == "running" else started + timedelta(seconds=seconds),
        "status": status, "guest_state": "shutoff", "size_bytes": 3 * GIB // 2, "files": [],
        "path": f"{host['name']}/{guest_uuid}/{started:%Y%m%dT%H%M%S.%fZ}",
        **fields,
    }  # fmt: skip
    with transaction(sessions) as session:
        backup = Backup(**row)
        session.add(backup)
        session.flush()
        return backup.id
