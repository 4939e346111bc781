"""Deleting a backup that a running backup builds on: the running backup records its parent as soon
as it chooses it, so the delete is refused (naming it) until it ends, and works once it failed;
a parent deleted first makes the new backup full, saying why; and when both happen at once, on
SQLite and PostgreSQL, exactly one wins."""

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.errors import Conflict
from app.models import Backup
from app.services.backups.backup_kind import Plan, hold_parent
from app.services.backups.catalog import delete_backup
from tests.backup_chains import stored_chain
from tests.backups import add_backup
from tests.conftest import add_host, node_uri


@pytest.fixture
def alpha(make_client) -> tuple[TestClient, dict, Path]:
    """An admin's client, host alpha, and the backup directory."""
    admin = make_client()
    host = add_host(admin, "alpha", node_uri("node-alpha.xml"))
    return admin, host, Path(admin.app.state.settings.backup_dir)


def incremental_on(parent: int) -> Plan:
    """An incremental plan building on backup parent, as plan_backup makes it."""
    return Plan(checkpoint="virtdeck-new", parent=parent, since="virtdeck-old", changed={"vda": 1})


def end(sessions: sessionmaker[Session], backup_id: int, status: str) -> None:
    """The running backup ends with status, as its job leaves it."""
    with transaction(sessions) as session:
        session.execute(update(Backup).where(Backup.id == backup_id).values(status=status))


def full_and_running(sessions: sessionmaker[Session], root: Path, host: dict) -> tuple[int, int]:
    """A full backup with its files, and a newer backup of the same guest that is running."""
    (full,) = stored_chain(sessions, root, host, length=1)
    return full, add_backup(sessions, host, status="running", age=-timedelta(minutes=5))


def test_a_backup_a_running_one_builds_on_is_kept_until_that_one_ends(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, running = full_and_running(sessions, root, host)
    directory = root / admin.get(f"/api/v1/backups/{full}").json()["path"]

    plan = hold_parent(sessions, running, incremental_on(full))
    shown = admin.get(f"/api/v1/backups/{running}").json()
    refused = admin.delete(f"/api/v1/backups/{full}")
    listed = admin.get(f"/api/v1/backups/{full}").json()
    end(sessions, running, "failed")
    deleted = admin.delete(f"/api/v1/backups/{full}")

    assert (plan.kind, plan.parent) == ("incremental", full)
    assert (shown["kind"], shown["parent_id"]) == ("incremental", full)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"backup {full} cannot be deleted: backup {running}, running now, builds on it; "
        "wait until it ends or cancel it"
    )
    assert refused.json()["running"] == [running]
    assert listed["dependents"] == [running]
    assert deleted.status_code == 204, deleted.text
    assert not directory.exists()
    assert admin.get(f"/api/v1/backups/{full}").status_code == 404


def test_once_the_running_backup_succeeded_it_is_deleted_first(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, running = full_and_running(sessions, root, host)
    hold_parent(sessions, running, incremental_on(full))
    end(sessions, running, "succeeded")

    refused = admin.delete(f"/api/v1/backups/{full}")
    child = admin.delete(f"/api/v1/backups/{running}")
    then = admin.delete(f"/api/v1/backups/{full}")

    assert refused.status_code == 409 and refused.json()["dependents"] == [running]
    assert "running" not in refused.json()
    assert child.status_code == 204 and then.status_code == 204


def test_a_parent_deleted_as_a_backup_begins_makes_that_backup_full_and_says_why(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, running = full_and_running(sessions, root, host)

    deleted = admin.delete(f"/api/v1/backups/{full}")
    plan = hold_parent(sessions, running, incremental_on(full))
    shown = admin.get(f"/api/v1/backups/{running}").json()

    assert deleted.status_code == 204
    assert (plan.kind, plan.parent, plan.since, plan.checkpoint) == (
        "full",
        None,
        None,
        "virtdeck-new",
    )
    assert plan.full_reason == f"the previous backup ({full}) was deleted as this one began"
    assert shown["parent_id"] is None


def race(
    sessions: sessionmaker[Session], settings: Settings, *, full: int, running: int
) -> tuple[str, str]:
    """Delete backup full while running backup running chooses it as its parent, both at once;
    (whether the delete went through, what kind the backup became)."""
    start, found = threading.Barrier(2), {}

    def delete() -> None:
        start.wait()
        try:
            delete_backup(sessions, settings, full)
            found["delete"] = "deleted"
        except Conflict:
            found["delete"] = "refused"

    def plan() -> None:
        start.wait()
        found["plan"] = hold_parent(sessions, running, incremental_on(full)).kind

    threads = [threading.Thread(target=delete), threading.Thread(target=plan)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return found["delete"], found["plan"]


def test_a_delete_racing_a_backup_that_chooses_the_same_parent_never_both_win(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    outcomes = set()
    for _ in range(15):
        full, running = full_and_running(sessions, root, host)
        outcomes.add(race(sessions, admin.app.state.settings, full=full, running=running))
        end(sessions, running, "failed")
        admin.delete(f"/api/v1/backups/{full}")
        admin.delete(f"/api/v1/backups/{running}")

    assert outcomes <= {("deleted", "full"), ("refused", "incremental")}, outcomes
