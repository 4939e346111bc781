"""Job kinds: backups and restores stop when asked; a guest create cannot be cancelled."""

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Job


def running_job(sessions: sessionmaker[Session], kind: str) -> int:
    with transaction(sessions) as session:
        job = Job(kind=kind, status="running", progress=0.0, message="started")
        session.add(job)
        session.flush()
        return job.id


def test_only_backups_and_restores_can_be_cancelled(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    jobs = {kind: running_job(sessions, kind) for kind in ("backup", "restore", "guest.create")}

    answers = {kind: client.post(f"/api/v1/jobs/{job}/cancel") for kind, job in jobs.items()}

    assert answers["backup"].is_success and answers["restore"].is_success
    assert answers["backup"].json()["kind"] == "backup"
    refused = answers["guest.create"]
    assert refused.status_code == 409
    assert refused.json()["detail"] == "a guest.create job cannot be cancelled"
