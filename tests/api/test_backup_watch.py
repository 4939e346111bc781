"""Watched backups: the scheduled verification marks a backup with a flipped byte corrupt (once,
whichever of two instances holds the host), and the webhook receives a JSON POST when a backup or
a verification fails."""

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models import Job
from app.models.base import utcnow
from app.services.backups.files import make_private_dirs, write_manifest
from tests.backups import DB_1, WEB_1, add_backup
from tests.conftest import add_host, node_uri
from tests.nodes import LONE, storage_node
from tests.polling import finished_job, until

DISK = bytes(range(256)) * 256  # 64 KiB


class Hook:
    """A webhook receiver on 127.0.0.1: the JSON bodies POSTed to it, in order."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                """Keep the JSON body; answer 204."""
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                hook.received.append({"type": self.headers["Content-Type"], **body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[str]:
        """The events received so far."""
        return [body["event"] for body in self.received]


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A webhook receiver, serving until the test ends."""
    receiver = Hook()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def stored_backup(
    sessions: sessionmaker[Session],
    root: Path,
    host: dict,
    *,
    guest_uuid: str,
    guest_name: str,
    checked_days_ago: float,
    flip: bool = False,
) -> int:
    """A succeeded backup with its files and manifest in the backup directory, last verified
    that many days ago; with flip, one byte of its disk image changed since. Its id."""
    path = f"{host['name']}/{guest_uuid}/{checked_days_ago:g}d"
    directory = make_private_dirs(root, path)
    files = []
    for name, kind, data in (
        ("domain.xml", "domain-xml", b"<domain/>"),
        ("disk-vda.qcow2", "disk", DISK),
    ):
        (directory / name).write_bytes(data)
        files.append({"name": name, "kind": kind, "target": None, "format": None,
                      "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
    manifest_sha256 = write_manifest(directory, {"files": files})
    if flip:
        with open(directory / "disk-vda.qcow2", "r+b") as image:
            image.seek(4096)
            image.write(bytes([DISK[4096] ^ 0xFF]))
    return add_backup(
        sessions, host, guest_uuid=guest_uuid, guest_name=guest_name, path=path, files=files,
        manifest_sha256=manifest_sha256, verified_at=utcnow() - timedelta(days=checked_days_ago),
    )  # fmt: skip


def test_the_scheduled_verification_marks_a_flipped_byte_corrupt_once_and_posts_the_webhook(
    make_client, sessions: sessionmaker[Session], hook: Hook, tmp_path: Path
) -> None:
    watch = {"backup_dir": str(tmp_path), "backup_verify_days": 7, "backup_webhook_url": hook.url}
    # Registers the host without syncing it; its worker may run jobs, with the same settings.
    setup = make_client(sync_enabled=False, **watch)
    created = setup.post("/api/v1/hosts", json={"name": "alpha", "uri": node_uri("node-alpha.xml")})
    host = created.json()
    flipped = stored_backup(sessions, tmp_path, host, guest_uuid=WEB_1, guest_name="web-1",
                            checked_days_ago=8, flip=True)  # fmt: skip
    intact = stored_backup(sessions, tmp_path, host, guest_uuid=DB_1, guest_name="db-1",
                           checked_days_ago=9)  # fmt: skip
    recent = stored_backup(sessions, tmp_path, host, guest_uuid=DB_1, guest_name="db-1",
                           checked_days_ago=1, flip=True)  # fmt: skip

    # Two instances on the database: the one that takes the host's lease verifies its backups.
    first, _second = make_client(**watch), make_client(**watch)

    def verify_jobs() -> list[Job]:
        with sessions() as session:
            return list(session.scalars(select(Job).where(Job.kind == "backup.verify")))

    until(lambda: verify_jobs(), timeout=15, what="no verification job was queued")
    job = finished_job(first, verify_jobs()[0].id)
    backups = {b["id"]: b for b in first.get("/api/v1/backups").json()["items"]}
    until(lambda: hook.received, timeout=10, what="the webhook received nothing")

    assert len(verify_jobs()) == 1
    assert job["status"] == "succeeded" and job["kind"] == "backup.verify"
    assert job["result"] == {"verified": 2, "corrupt": [flipped], "unrestorable": []}
    assert backups[flipped]["status"] == "corrupt"
    assert backups[flipped]["error"] == "checksum mismatch: disk-vda.qcow2"
    assert backups[intact]["status"] == "succeeded"
    assert utcnow() - timedelta(minutes=1) < _verified(backups[intact]) < utcnow()
    # Checked a day ago: not due, so its flipped byte is not found yet.
    assert backups[recent]["status"] == "succeeded"
    assert _verified(backups[recent]) < utcnow() - timedelta(hours=23)
    assert len(hook.received) == 1
    posted = hook.received[0]
    assert posted["type"] == "application/json"
    assert posted["event"] == "verify.failed" and posted["backup_id"] == flipped
    assert posted["guest"] == {"uuid": WEB_1, "name": "web-1"} and posted["host"] == "alpha"
    assert posted["status"] == "corrupt" and "disk-vda.qcow2" in posted["error"]
    assert posted["time"].startswith(str(utcnow().year))


def _verified(backup: dict) -> datetime:
    return datetime.fromisoformat(backup["verified_at"])


def test_a_failed_backup_posts_the_webhook_and_the_job_does_not_wait_for_it(
    make_client, hook: Hook, tmp_path: Path
) -> None:
    client = make_client(test_driver_dir=str(tmp_path), backup_webhook_url=hook.url)
    add_host(client, "storage", storage_node(tmp_path))

    started = client.post(f"/api/v1/guests/{LONE}/backups")
    job = finished_job(client, started.json()["job"]["id"])
    until(lambda: hook.received, timeout=10, what="the webhook received nothing")

    assert started.status_code == 202, started.text
    assert job["status"] == "failed"
    assert hook.events() == ["backup.failed"]
    posted = hook.received[0]
    assert posted["backup_id"] == started.json()["backup"]["id"]
    assert posted["guest"] == {"uuid": LONE, "name": "lone"} and posted["host"] == "storage"
    assert posted["status"] == "failed" and posted["error"] == job["error"]


def test_the_webhook_url_must_be_http_or_https() -> None:
    for bad in ("file:///etc/passwd", "ftp://example.com/x", "http://", "example.com/hook"):
        with pytest.raises(ValidationError, match="backup_webhook_url: an http"):
            Settings(backup_webhook_url=bad)
    assert Settings(backup_webhook_url="https://hooks.example/x").backup_webhook_url
