"""Faults during an incremental backup on the real libvirtd: libvirtd killed while the changed
blocks are copied fails the backup with a plain reason and leaves no delta file; libvirtd comes
back, the failed backup's checkpoint does not stand in the way, and the next backup builds on the
full one and restores exactly."""

import os
import signal
from pathlib import Path

import pytest

from tests.backups import (
    BACKUP_TIMEOUT,
    back_up,
    backup_files_left,
    start_backup,
    wait_until_copying,
)
from tests.conftest import add_host
from tests.libvirtd import SYSTEM_URI, restart_libvirtd, virsh
from tests.polling import finished_job, until
from tests.running_guests import checkpoint_names, restored_copies, restored_equals, running_guest

pytestmark = pytest.mark.libvirtd

MIB = 1 << 20
LIBVIRTD_PID = Path("/run/libvirtd.pid")


def test_libvirtd_killed_during_an_incremental_fails_it_and_the_next_backup_restores_exactly(
    make_client, tmp_path: Path
) -> None:
    # 4 MiB/s: the 24 MiB of changes take seconds to copy, time enough to kill libvirtd.
    client = make_client(backup_bandwidth_mib=4)
    root = Path(client.app.state.settings.backup_dir)
    with running_guest(tmp_path) as running, restored_copies() as copies:
        host = add_host(client, "local", SYSTEM_URI)
        running.write("write -P 0x11 0 1M")
        full = back_up(client, running.guest.uuid)
        full_files = sorted(p.name for p in backup_files_left(root))
        running.write("write -P 0x22 8M 24M")

        started = start_backup(client, running.guest.uuid)
        wait_until_copying(client, started["job"]["id"])
        os.kill(int(LIBVIRTD_PID.read_text()), signal.SIGKILL)
        try:
            job = finished_job(client, started["job"]["id"], timeout=BACKUP_TIMEOUT)
        finally:
            restart_libvirtd()
        failed = client.get(f"/api/v1/backups/{started['backup']['id']}").json()
        left = sorted(p.name for p in backup_files_left(root))
        state = virsh("domstate", running.guest.uuid).strip()

        def reconnected() -> bool:
            return client.get(f"/api/v1/hosts/{host['id']}").json()["connection"] == "connected"

        until(reconnected, timeout=60, interval=0.2, what="the host came back after libvirtd")

        running.write("write -P 0x33 40M 1M")
        again = back_up(client, running.guest.uuid)
        checkpoints_after = checkpoint_names(running.guest)
        name = f"{running.guest.name}-after-kill"
        copies.append(name)
        equal = restored_equals(client, again, name, running.expected_now("after-kill"))

    assert job["status"] == "failed", job
    assert job["error"] == (
        "the connection to libvirtd was lost during the backup (libvirtd stopped or restarted)"
    )
    assert (failed["status"], failed["error"]) == ("failed", job["error"])
    assert left == full_files == ["disk-vda.extents", "domain.xml", "manifest.json"]
    assert state == "running"
    # The killed backup's checkpoint went with it: the next one builds on the full backup,
    # with every change since (the killed backup's and the later ones).
    assert (again["status"], again["kind"], again["parent_id"]) == (
        "succeeded",
        "incremental",
        full["id"],
    )
    assert again["changed_bytes"] >= 25 * MIB
    assert checkpoints_after == [again["checkpoint"]]
    assert equal
