"""Images through virtdeck, as users run them: `virtdeck serve` with its worker process (the
layout of `make run`), the local libvirtd reached as a local host and as a qemu+ssh host (a
private sshd on 127.0.0.1), against the fastest alternative on the same path.

Prints, per route:
- upload of a 1 GiB file of random bytes by the API (PUT, streamed), SHA-256 included, against
  `virsh vol-upload` of the same file over the same URI (the libvirt stream alone, no hash);
- clone of a shut-off guest whose qcow2 disk holds 1 GiB of random data, the job from request
  to done, against `qemu-img convert` of the same disk (local only: it is not a remote copy);
- clone of the same guest running (a push-mode copy at one instant).

    flock /tmp/virtdeck-libvirtd.lock .venv/bin/python bench/images.py
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Row, print_table  # noqa: E402
from tests.console_guest import console_guest  # noqa: E402
from tests.libvirtd import IMAGES, SYSTEM_URI, virsh  # noqa: E402
from tests.polling import finished_job  # noqa: E402
from tests.serve import Server, running_server  # noqa: E402
from tests.sshd import sshd_for_libvirt  # noqa: E402
from tests.storage import remove_guest, throwaway_pool  # noqa: E402

MIB = 1024**2
SIZE = 1024 * MIB


def rate(seconds: float, size: int = SIZE) -> tuple[str, str]:
    return f"{seconds:.2f} s", f"{size / MIB / seconds:.0f} MiB/s"


def random_file(path: Path, size: int = SIZE) -> Path:
    with path.open("wb") as out:
        for _ in range(size // (16 * MIB)):
            out.write(os.urandom(16 * MIB))
    return path


def upload(server: Server, host: int, pool: str, name: str, source: Path) -> float:
    """Seconds for the API to take the file into a new volume (and answer its SHA-256)."""
    url = f"{server.url}/api/v1/hosts/{host}/pools/{pool}/volumes/{name}"
    headers = {"Authorization": f"Bearer {server.token}", "Content-Length": str(SIZE)}

    def chunks():
        with source.open("rb") as handle:
            while chunk := handle.read(MIB):
                yield chunk

    started = time.monotonic()
    done = httpx.put(url, params={"format": "raw"}, content=chunks(), headers=headers, timeout=600)
    seconds = time.monotonic() - started
    assert done.status_code == 201, done.text
    return seconds


def vol_upload(uri: str, pool: str, name: str, source: Path) -> float:
    """Seconds for `virsh vol-upload` of the file into a new volume over the URI."""
    subprocess.run(
        ["virsh", "-c", uri, "vol-create-as", pool, name, str(SIZE), "--format", "raw"],
        check=True, capture_output=True,
    )  # fmt: skip
    started = time.monotonic()
    subprocess.run(
        ["virsh", "-c", uri, "vol-upload", "--pool", pool, name, str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started


def clone(server: Server, uuid: str, name: str, pool: str) -> float:
    """Seconds from the clone request to its job's end."""
    started = time.monotonic()
    asked = server.api("POST", f"/guests/{uuid}/clone", json={"name": name, "pool": pool})
    assert asked.status_code == 202, asked.text
    job = finished_job(server, asked.json()["id"], timeout=600)
    seconds = time.monotonic() - started
    assert job["status"] == "succeeded", job
    return seconds


def guest_disk(pool: str, name: str, work: Path) -> Path:
    """A 2 GiB qcow2 volume in the pool holding 1 GiB of random data."""
    data = random_file(work / "data.raw")
    disk = IMAGES / pool / name
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(data), str(disk)], check=True)
    subprocess.run(["qemu-img", "resize", "-q", str(disk), "2G"], check=True)
    data.unlink()
    virsh("pool-refresh", pool)
    return disk


def measure(server: Server, route: str, uri: str, pool: str, source: Path) -> list[Row]:
    host = server.add_host(route.replace("+", " "), uri)
    tag = route.split()[0].replace("+", "-")
    api = upload(server, host, pool, f"api-{tag}.img", source)
    direct = vol_upload(uri, pool, f"virsh-{tag}.img", source)
    return [
        Row(f"upload 1 GiB, API ({route})", rate(api)),
        Row(f"upload 1 GiB, virsh vol-upload ({route})", rate(direct)),
    ]


def main() -> None:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vd-bench-images-") as tmp:
        work = Path(tmp)
        for part in ("guest", "sshd", "local", "ssh"):
            (work / part).mkdir()
        source = random_file(work / "image.raw")
        env = {"VIRTDECK_DEFAULT_HOST_URI": ""}
        with throwaway_pool("vdtest-bench") as pool:
            with running_server(work / "local", env) as server:
                rows += measure(server, "local host", SYSTEM_URI, pool, source)
            with (
                sshd_for_libvirt(work / "sshd") as ssh,
                running_server(work / "ssh", env) as server,
            ):
                rows += measure(server, "qemu+ssh host", ssh.uri(), pool, source)
            source.unlink()
            with console_guest(work / "guest", virtio=True, start=False) as guest:
                disk = guest_disk(pool, f"{guest.name}-vda.qcow2", work)
                virsh("attach-disk", guest.name, str(disk), "vda", "--subdriver", "qcow2",
                      "--config")  # fmt: skip
                started = time.monotonic()
                subprocess.run(
                    ["qemu-img", "convert", "-q", "-O", "qcow2", str(disk),
                     str(work / "copy.qcow2")], check=True,
                )  # fmt: skip
                reference = time.monotonic() - started
                names = (f"{guest.name}-off", f"{guest.name}-on")
                try:
                    with running_server(work / "guest", env) as server:
                        server.add_host("local", SYSTEM_URI)
                        off = clone(server, guest.uuid, names[0], pool)
                        virsh("start", guest.uuid)
                        on = clone(server, guest.uuid, names[1], pool)
                finally:
                    for name in names:
                        remove_guest(name)
        rows += [
            Row("clone, shut-off guest, 1 GiB of data", rate(off)),
            Row("clone, running guest, 1 GiB of data", rate(on)),
            Row("qemu-img convert of the same disk", rate(reference)),
        ]
    print_table(("measure", "seconds", "rate"), rows)


if __name__ == "__main__":
    main()
