"""The virtdeck command line."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

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
