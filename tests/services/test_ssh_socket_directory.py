"""The directory a qemu+ssh host's pull-mode export gets, made and removed over a real SSH
connection (a private sshd on this machine, so the host's /tmp is this /tmp): it exists, owned as
asked and private, while the block runs; it is gone afterwards, also when the block failed or the
connection was cut without a word (as when virtdeck dies); a bad owner is refused up front."""

import os
import pwd
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import VirtdeckError
from app.services.backups.ssh_exports import remote_socket_directory
from app.services.ssh_hosts import MAX_LINE, SshSession
from tests.polling import until
from tests.sshd import SshHost

SETTINGS = Settings(database_url="sqlite://", default_host_uri="")


def test_the_directory_lives_as_long_as_the_block(ssh: SshHost) -> None:
    owner = pwd.getpwnam("nobody")
    with closing(SshSession(ssh.uri(), SETTINGS)) as session:
        with remote_socket_directory(session, f"+{owner.pw_uid}:+{owner.pw_gid}") as made:
            found = os.stat(made)
            (Path(made) / "left-by-qemu").write_text("x")
        assert (found.st_uid, found.st_gid) == (owner.pw_uid, owner.pw_gid)
        assert found.st_mode & 0o777 == 0o700
        assert not Path(made).exists()

        with (
            pytest.raises(RuntimeError, match="the copy failed"),
            remote_socket_directory(session, None) as failed,
        ):
            raise RuntimeError("the copy failed")
        assert not Path(failed).exists()

        with (
            pytest.raises(VirtdeckError, match="not user:group"),
            remote_socket_directory(session, "root; rm -rf /"),
        ):
            pass


def test_what_a_held_command_prints_is_read_to_a_bound(ssh: SshHost) -> None:
    flood = "head -c 100000 /dev/zero | tr '\\0' x; echo; cat >/dev/null"
    with closing(SshSession(ssh.uri(), SETTINGS)) as session, session.holding(flood) as said:
        assert said == "x" * MAX_LINE


HOLDER = """
import sys, time
from contextlib import closing
from app.config import Settings
from app.services.backups.ssh_exports import remote_socket_directory
from app.services.ssh_hosts import SshSession
settings = Settings(database_url="sqlite://", default_host_uri="")
with closing(SshSession(sys.argv[1], settings)) as session:
    with remote_socket_directory(session, None) as made:
        print(made, flush=True)
        time.sleep(60)
"""


def test_the_directory_goes_when_virtdeck_dies_holding_it(ssh: SshHost) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ssh.uri()], stdout=subprocess.PIPE, text=True
    )
    try:
        made = Path(holder.stdout.readline().strip())
        assert made.is_dir()
    finally:
        holder.kill()  # no end of input is sent: the connection just goes
        holder.wait(timeout=10)
        holder.stdout.close()

    until(lambda: not made.exists(), timeout=10, what=f"{made} outlived virtdeck")
