"""A job's libvirt connection (app.services.backups.work) on the real libvirtd: one a job gave
back after succeeding serves the next job on the host; one a failed job gave back does not; and
one whose libvirtd was killed meanwhile is replaced by a new one that works."""

import subprocess

import pytest

from app.config import Settings
from app.services.backups.work import connect, release
from tests.libvirtd import SYSTEM_URI, restart_libvirtd

pytestmark = pytest.mark.libvirtd
SETTINGS = Settings(database_url="sqlite://", default_host_uri="")


def test_a_kept_connection_serves_the_next_job_unless_it_stopped_answering() -> None:
    first = connect(SYSTEM_URI, SETTINGS)
    release(SYSTEM_URI, first, keep=True)
    again = connect(SYSTEM_URI, SETTINGS)
    assert again is first

    release(SYSTEM_URI, again, keep=False)  # a failed job's: closed
    fresh = connect(SYSTEM_URI, SETTINGS)
    assert fresh is not first and fresh.answers()

    release(SYSTEM_URI, fresh, keep=True)
    try:
        assert subprocess.run(["pkill", "-KILL", "-x", "libvirtd"]).returncode == 0
    finally:
        restart_libvirtd()
    after = connect(SYSTEM_URI, SETTINGS)
    try:
        assert after is not fresh
        assert after.facts().libvirt_version  # a working connection, not the dead one
    finally:
        release(SYSTEM_URI, after, keep=False)
