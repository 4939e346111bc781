"""Backups and restores through the API in tests: start one, wait for it, see what it left."""

from pathlib import Path

from fastapi.testclient import TestClient

from tests.polling import finished_job, until

# A backup or restore of a real disk may take a while on a busy machine.
BACKUP_TIMEOUT = 120


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


def backup_files_left(root: Path) -> list[Path]:
    """Every file under the backup directory."""
    return [p for p in root.rglob("*") if p.is_file()]
