"""Chains of incremental backups through the API: each backup says its kind, parent, changed bytes
and whether it can be restored; a backup others build on cannot be deleted (the answer names
them) while the newest incremental can; verifying an incremental whose full backup is corrupt or
gone keeps it succeeded but not restorable; retention keeps what a kept backup builds on."""

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.services.backups.retention import apply_retention
from tests.backup_chains import CHANGED, FULL_REASON, flip_byte, stored_chain
from tests.backups import WEB_1
from tests.conftest import add_host, node_uri


@pytest.fixture
def alpha(make_client) -> tuple[TestClient, dict, Path]:
    """An admin's client (keeping two backups a guest), host alpha, and the backup directory."""
    admin = make_client(backup_keep=2)
    host = add_host(admin, "alpha", node_uri("node-alpha.xml"))
    return admin, host, Path(admin.app.state.settings.backup_dir)


def backup(client: TestClient, backup_id: int) -> dict:
    """The backup as the API answers it."""
    answer = client.get(f"/api/v1/backups/{backup_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_api_lists_each_backup_of_a_chain_with_its_kind_parent_and_changes(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, first, second = stored_chain(sessions, root, host, full_reason=FULL_REASON)

    listed = admin.get("/api/v1/backups", params={"guest_uuid": WEB_1}).json()["items"]
    chain = {
        b["id"]: (b["kind"], b["parent_id"], b["changed_bytes"], b["full_reason"], b["dependents"])
        for b in listed
    }

    assert [b["id"] for b in listed] == [second, first, full]
    assert chain == {
        full: ("full", None, None, FULL_REASON, [first, second]),
        first: ("incremental", full, CHANGED, None, [second]),
        second: ("incremental", first, CHANGED, None, []),
    }
    assert all(b["restorable"] and b["unrestorable_reason"] is None for b in listed)
    assert backup(admin, first)["files"][1]["format"] == "delta"


def test_a_backup_others_build_on_cannot_be_deleted_and_the_answer_names_them(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, first, second = stored_chain(sessions, root, host)
    paths = {i: root / backup(admin, i)["path"] for i in (full, first, second)}

    refused_full = admin.delete(f"/api/v1/backups/{full}")
    refused_first = admin.delete(f"/api/v1/backups/{first}")
    newest = admin.delete(f"/api/v1/backups/{second}")
    then_first = admin.delete(f"/api/v1/backups/{first}")
    then_full = admin.delete(f"/api/v1/backups/{full}")

    assert refused_full.status_code == 409
    assert refused_full.json()["detail"] == (
        f"backup {full} cannot be deleted: backups {first} and {second} build on it; "
        "delete those first, newest first"
    )
    assert refused_full.json()["dependents"] == [first, second]
    assert refused_first.status_code == 409
    assert refused_first.json()["detail"] == (
        f"backup {first} cannot be deleted: backup {second} builds on it; delete that one first"
    )
    assert newest.status_code == 204
    assert then_first.status_code == 204 and then_full.status_code == 204
    assert not any(path.exists() for path in paths.values())
    assert admin.get("/api/v1/backups").json()["total"] == 0


def test_verifying_an_incremental_whose_full_backup_is_corrupt_keeps_it_but_not_restorable(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, first, _second = stored_chain(sessions, root, host)
    flip_byte(root, backup(admin, full)["path"], "disk-vda.qcow2")

    of_full = admin.post(f"/api/v1/backups/{full}/verify").json()
    of_first = admin.post(f"/api/v1/backups/{first}/verify").json()
    restore = admin.post(f"/api/v1/backups/{first}/restore", json={"mode": "new", "name": "back"})

    assert of_full["status"] == "corrupt" and of_full["restorable"] is False
    assert of_full["unrestorable_reason"] == "its own files are corrupt"
    assert of_first["status"] == "succeeded" and of_first["error"] is None
    assert of_first["restorable"] is False
    assert of_first["unrestorable_reason"] == f"backup {full} is corrupt"
    assert restore.status_code == 409
    assert f"backup {full}" in restore.json()["detail"]


def test_verifying_an_incremental_whose_full_backup_lost_its_disk_marks_that_one_corrupt(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    full, first, second = stored_chain(sessions, root, host)
    (root / backup(admin, full)["path"] / "disk-vda.qcow2").unlink()

    of_second = admin.post(f"/api/v1/backups/{second}/verify").json()
    now_full, now_first = backup(admin, full), backup(admin, first)

    assert of_second["status"] == "succeeded"
    assert of_second["unrestorable_reason"] == f"backup {full} is corrupt"
    assert now_full["status"] == "corrupt"
    assert now_full["error"] == f"missing: disk-vda.qcow2 (found by verifying backup {second})"
    assert now_first["status"] == "succeeded" and now_first["restorable"] is False


def test_retention_keeps_the_full_backup_a_kept_incremental_builds_on(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    older_full, older_incremental = stored_chain(
        sessions, root, host, length=2, age=timedelta(days=1)
    )
    full, first, second = stored_chain(sessions, root, host)
    older_path = root / backup(admin, older_full)["path"]

    removed = apply_retention(sessions, admin.app.state.settings, WEB_1)
    kept = admin.get("/api/v1/backups", params={"guest_uuid": WEB_1}).json()["items"]

    # keep-last 2 keeps the two newest incrementals; the full they build on stays with them.
    assert removed == 2
    assert [b["id"] for b in kept] == [second, first, full]
    assert not older_path.exists()
    assert admin.get(f"/api/v1/backups/{older_incremental}").status_code == 404
