"""The virtdeck command line."""

import ctypes
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.workers.process import STOP_LIMIT
from tests.polling import until
from tests.serve import running_worker

# The Linux system call that sends a signal to one thread of a process (x86_64 and arm64).
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}[os.uname().machine]

VIRTDECK = Path(sys.executable).with_name("virtdeck")


def test_migrate_creates_the_schema_in_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "virtdeck.db"
    env = {**os.environ, "VIRTDECK_DATABASE_URL": f"sqlite:///{db}"}

    done = subprocess.run([VIRTDECK, "migrate"], env=env, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert {"hosts", "guests", "alembic_version"} <= tables


def test_help_lists_serve_and_migrate() -> None:
    done = subprocess.run([VIRTDECK, "--help"], capture_output=True, text=True)

    assert done.returncode == 0
    assert "serve" in done.stdout and "migrate" in done.stdout


def test_create_user_and_create_token_give_a_working_api_token(tmp_path: Path) -> None:
    env = {**os.environ, "VIRTDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    made = subprocess.run(
        [VIRTDECK, "create-user", "ops", "--role", "operator"],
        input="a long enough password\n", env=env, capture_output=True, text=True,
    )  # fmt: skip
    token = subprocess.run(
        [VIRTDECK, "create-token", "ops", "--name", "cron", "--role", "viewer"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    too_high = subprocess.run(
        [VIRTDECK, "create-token", "ops", "--name", "x", "--role", "admin"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip

    assert made.returncode == 0 and made.stdout.strip() == "created operator ops"
    assert token.returncode == 0 and token.stdout.startswith("vd_")
    assert too_high.returncode != 0 and "cannot exceed the user's own role" in too_high.stderr
    app = create_app(Settings(database_url=env["VIRTDECK_DATABASE_URL"], default_host_uri=""))
    with TestClient(app) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token.stdout.strip()}"})
    assert me.json()["username"] == "ops" and me.json()["role"] == "viewer"


def test_create_user_refuses_a_short_password(tmp_path: Path) -> None:
    env = {**os.environ, "VIRTDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    done = subprocess.run(
        [VIRTDECK, "create-user", "ops", "--role", "admin"],
        input="short\n", env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "password: at least 10 characters" in done.stderr


def test_a_worker_stops_on_sigterm_whichever_of_its_threads_receives_it(tmp_path: Path) -> None:
    """SIGTERM sent to one of `virtdeck worker`'s other threads (as the kernel may deliver a
    process's signal): the worker still stops, within STOP_LIMIT, and exits with 0."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "test:///default"}
    with running_worker(tmp_path, env) as worker:
        log = tmp_path / "worker.log"
        until(lambda: "started" in log.read_text(), timeout=20)
        others = [int(t) for t in os.listdir(f"/proc/{worker.pid}/task") if int(t) != worker.pid]
        assert others, "the worker runs threads besides its main one"
        sent = ctypes.CDLL(None, use_errno=True).syscall(SYS_TGKILL, worker.pid, others[-1],
                                                         signal.SIGTERM)  # fmt: skip
        assert sent == 0
        code = worker.wait(timeout=STOP_LIMIT + 5)

    assert code == 0
    assert "stopping" in log.read_text()


def test_a_worker_on_sqlite_without_ssh_hosts_maps_neither_libpq_nor_cryptography(
    tmp_path: Path,
) -> None:
    """What only PostgreSQL or a qemu+ssh host needs (psycopg, asyncssh with cryptography:
    about 24 MiB of memory) stays out of a worker that has neither."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "test:///default"}
    with running_worker(tmp_path, env) as worker:
        until(lambda: "started" in (tmp_path / "worker.log").read_text(), timeout=20)
        maps = Path(f"/proc/{worker.pid}/maps").read_text()

    assert "/libvirtmod" in maps  # the maps of the worker's own libraries are read
    assert "psycopg" not in maps and "cryptography" not in maps
