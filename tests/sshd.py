"""A private sshd on 127.0.0.1 through which this machine's libvirtd is a qemu+ssh host.

`sshd_for_libvirt()` runs `/usr/sbin/sshd -D` with its own config, host key and client key (all in
a temporary directory) on a free port of 127.0.0.1, letting root in by key only and allowing TCP
forwarding (the direct-tcpip channels that reach a guest's VNC port). libvirt's qemu+ssh transport
runs the ssh binary, which checks host keys against root's ~/.ssh/known_hosts only (the URI's
known_hosts parameter is for the libssh transports), so the fixture adds the one line for
[127.0.0.1]:PORT there and removes exactly that line afterwards. It also writes a known_hosts file
with the right key and one with a wrong key, for code that checks host keys itself (asyncssh).

Needs root and openssh-server (scripts/setup-system.sh --test installs it).
"""

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.virt.uri import FILE_PATH

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshHost:
    """A running private sshd that lets root in with keyfile."""

    port: int
    pid: int
    keyfile: Path
    known_hosts: Path
    wrong_known_hosts: Path
    log: Path

    def uri(self, known_hosts: Path | None = None) -> str:
        """The qemu+ssh URI of this machine's libvirtd through this sshd (known_hosts: the right
        file unless given)."""
        known = known_hosts or self.known_hosts
        for path in (self.keyfile, known):
            if not FILE_PATH.match(str(path)):
                raise ValueError(f"{path} cannot be a libvirt URI parameter")
        return (
            f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.keyfile}"
            f"&known_hosts={known}"
        )


def _keygen(path: Path) -> str:
    """Make an ed25519 key pair at path; return the public key as "type base64"."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    kind, key = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {key}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _user_known_hosts() -> Path:
    # ssh takes ~ from the password database, not from $HOME.
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"


def _add_line(path: Path, line: str) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "r+") as file:
        # Locked: tests in other processes add and remove their own lines at the same time.
        fcntl.flock(file, fcntl.LOCK_EX)
        text = file.read()
        file.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")


def _remove_line(path: Path, line: str) -> None:
    with contextlib.suppress(FileNotFoundError), path.open("r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        lines = file.read().splitlines(keepends=True)
        for i, existing in enumerate(lines):
            if existing.rstrip("\n") == line:
                del lines[i]
                break
        else:
            return
        file.seek(0)
        file.truncate()
        file.write("".join(lines))


def _descendants(pid: int) -> list[int]:
    """The processes below pid: sshd's per-connection processes and the commands they run."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _wait_for_banner(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-2.0-"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port}: {log.read_text()}")


@contextmanager
def sshd_for_libvirt(tmp_path: Path, timeout: float = 10) -> Iterator[SshHost]:
    """Run a private sshd on 127.0.0.1 that lets root in with a fresh key, and trust its host key
    in root's known_hosts; stop it and remove that line afterwards."""
    directory = tmp_path / "sshd"
    directory.mkdir(mode=0o700)
    host_key = _keygen(directory / "host_key")
    wrong_key = _keygen(directory / "wrong_host_key")
    client_key = _keygen(directory / "id_ed25519")
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key + "\n")
    port = _free_port()
    keyfile, log = directory / "id_ed25519", directory / "sshd.log"
    known_hosts, wrong_known_hosts = directory / "known_hosts", directory / "wrong_known_hosts"
    line = f"[127.0.0.1]:{port} {host_key}"
    known_hosts.write_text(line + "\n")
    wrong_known_hosts.write_text(f"[127.0.0.1]:{port} {wrong_key}\n")
    config, home = directory / "sshd_config", directory / "home"
    home.mkdir(mode=0o700)
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "AllowTcpForwarding yes\n"
        # sshd refuses an authorized_keys file below a world-writable directory such as /tmp.
        "StrictModes no\n"
        "LogLevel VERBOSE\n"
        # A home of its own for each session: Debian's bash runs ~/.bashrc for an ssh command,
        # and root's may do anything (here pyenv's rehash, whose lock file a session killed at
        # a test's end left behind, so that every later login waited for it).
        f"SetEnv HOME={home}\n"
    )
    # sshd insists on its privilege separation directory, which Debian's init scripts create.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    known = _user_known_hosts()
    process = None
    try:
        _add_line(known, line)
        process = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_banner(port, process, log, timeout)
        yield SshHost(
            port=port, pid=process.pid, keyfile=keyfile, known_hosts=known_hosts,
            wrong_known_hosts=wrong_known_hosts, log=log,
        )  # fmt: skip
    finally:
        if process is not None:
            sessions = _descendants(process.pid)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # Connections still open have their own sshd processes (and commands, in sessions of
            # their own), which outlive the listener.
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        _remove_line(known, line)
