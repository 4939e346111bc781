"""Uploading images through the API into a dir pool of the real libvirtd (the test driver cannot
stream volumes), against a real `virtdeck serve` so that bodies really stream: the volume holds
the bytes sent and the answer their SHA-256; refusals name the field, before any byte is written
where they can; a cut-off upload or a refused header leaves no volume; a host reached over SSH
takes an upload the same way. On SQLite and PostgreSQL."""

import hashlib
import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import clear_rows
from tests.libvirtd import IMAGES, SYSTEM_URI
from tests.serve import Server, running_server
from tests.sshd import SshHost
from tests.storage import pool_volumes, throwaway_pool, unique_name

pytestmark = pytest.mark.libvirtd
MIB = 1024 * 1024
# Far over any pool here, so that a pool's free space is what refuses a large upload.
LIMIT = 2**50


@pytest.fixture(scope="module")
def server(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`virtdeck serve` (its worker a process of its own, as `make run`) on SQLite: an upload
    writes nothing to the database but its audit row, as every route does on both."""
    url = sqlite_url
    env = {
        "VIRTDECK_DATABASE_URL": url,
        "VIRTDECK_DEFAULT_HOST_URI": "",
        "VIRTDECK_UPLOAD_MAX_BYTES": str(LIMIT),
    }
    try:
        with running_server(tmp_path_factory.mktemp("uploads"), env) as running:
            yield running
    finally:
        clear_rows(url)


@pytest.fixture(scope="module")
def host(server: Server) -> int:
    return server.add_host("local", SYSTEM_URI)


@pytest.fixture
def pool() -> Iterator[str]:
    with throwaway_pool() as name:
        yield name


def volume_url(host: int, pool: str, name: str) -> str:
    return f"/hosts/{host}/pools/{pool}/volumes/{name}"


def put(server: Server, url: str, body: bytes, fmt: str = "raw") -> httpx.Response:
    return server.api("PUT", url, params={"format": fmt}, content=body)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(pool: str, name: str) -> bytes:
    return (IMAGES / pool / name).read_bytes()


def connection(server: Server, url: str, *, announced: int) -> http.client.HTTPConnection:
    """A PUT of a raw image to url whose headers announce `announced` bytes; no body sent yet."""
    address = urlsplit(server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=20)
    conn.putrequest("PUT", f"/api/v1{url}?format=raw")
    conn.putheader("Authorization", f"Bearer {server.token}")
    conn.putheader("Content-Length", str(announced))
    conn.endheaders()
    return conn


def refused_before_the_body(server: Server, url: str, *, announced: int) -> dict:
    """The answer to an upload announcing that many bytes, given before any is sent."""
    conn = connection(server, url, announced=announced)
    try:
        response = conn.getresponse()
        return {"status": response.status, **httpx.Response(200, content=response.read()).json()}
    finally:
        conn.close()


def no_volumes_soon(pool: str, timeout: float = 10) -> list[str]:
    """The pool's volumes once it has none, or as they are after timeout seconds."""
    deadline = time.monotonic() + timeout
    while (found := pool_volumes(pool)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def audit_rows(server: Server, target: str) -> list[dict]:
    rows = server.api("GET", "/audit", params={"action": "volume.upload"}).json()["items"]
    return [row for row in rows if row["target"] == target]


def test_an_image_is_stored_byte_for_byte_and_the_answer_gives_its_sha256(
    server: Server, host: int, pool: str
) -> None:
    data = os.urandom(3 * MIB + 5)  # not a whole number of chunks
    name = "disk image.img"

    done = put(server, volume_url(host, pool, name), data)
    listed = server.api("GET", f"/hosts/{host}/pools/{pool}/volumes").json()

    assert done.status_code == 201, done.text
    assert done.json() == {
        "host_id": host, "pool": pool, "name": name, "path": str(IMAGES / pool / name),
        "format": "raw", "size": len(data), "sha256": sha256(data),
    }  # fmt: skip
    assert sha256(stored(pool, name)) == sha256(data)
    assert [v["name"] for v in listed] == [name]
    row = audit_rows(server, f"volume:{pool}/{name} (host {host})")[0]
    assert (row["result"], row["status_code"]) == ("ok", 201)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", *args], check=True, timeout=30)


def test_a_qcow2_image_is_taken_only_as_what_its_header_says_and_never_one_naming_a_file(
    server: Server, host: int, pool: str, tmp_path: Path
) -> None:
    plain, layered, base = (tmp_path / n for n in ("plain.qcow2", "layered.qcow2", "base.raw"))
    qemu_img("-f", "qcow2", str(plain), "16M")
    qemu_img("-f", "raw", str(base), "16M")
    qemu_img("-f", "qcow2", "-b", str(base), "-F", "raw", str(layered), "16M")

    as_qcow2 = put(server, volume_url(host, pool, "plain.qcow2"), plain.read_bytes(), "qcow2")
    as_raw = put(server, volume_url(host, pool, "plain.raw"), plain.read_bytes(), "raw")
    as_iso = put(server, volume_url(host, pool, "plain.iso"), plain.read_bytes(), "iso")
    raw_as_qcow2 = put(server, volume_url(host, pool, "zeros.qcow2"), bytes(MIB), "qcow2")
    backed = put(server, volume_url(host, pool, "layered.qcow2"), layered.read_bytes(), "qcow2")

    assert as_qcow2.status_code == 201, as_qcow2.text
    assert as_qcow2.json()["format"] == "qcow2"
    refusals = [as_raw, as_iso, raw_as_qcow2, backed]
    assert [r.status_code for r in refusals] == [422] * 4
    assert [r.json()["field"] for r in refusals] == [
        "upload.format", "upload.format", "upload.format", "upload.volume",
    ]  # fmt: skip
    assert "names a backing file" in backed.json()["detail"]
    assert pool_volumes(pool) == ["plain.qcow2"]


def test_an_image_larger_than_the_pools_free_space_or_the_limit_is_refused_before_a_byte(
    server: Server, host: int, pool: str
) -> None:
    pools = {p["name"]: p for p in server.api("GET", f"/hosts/{host}/pools").json()}
    too_large = pools[pool]["available"] + 1

    no_room = refused_before_the_body(
        server, volume_url(host, pool, "big.iso"), announced=too_large
    )
    over = refused_before_the_body(server, volume_url(host, pool, "huge.iso"), announced=LIMIT + 1)

    assert (no_room["status"], no_room["field"]) == (422, "size")
    assert f"does not fit in pool '{pool}'" in no_room["detail"]
    assert (over["status"], over["field"]) == (422, "size")
    assert "over the upload limit of 1024 TiB" in over["detail"]
    assert pool_volumes(pool) == []


def test_a_name_taken_in_the_pool_is_a_conflict_and_the_volume_there_stays(
    server: Server, host: int, pool: str
) -> None:
    first, second = os.urandom(MIB), os.urandom(MIB)
    url = volume_url(host, pool, "media.iso")

    put(server, url, first, "iso")
    again = put(server, url, second, "iso")

    assert (again.status_code, again.json()["field"]) == (409, "name")
    assert again.json()["detail"] == f"name: pool '{pool}' already has a volume 'media.iso'"
    assert sha256(stored(pool, "media.iso")) == sha256(first)


def test_a_bad_name_no_format_or_no_length_is_refused_naming_the_field(
    server: Server, host: int, pool: str
) -> None:
    hidden = put(server, volume_url(host, pool, ".hidden"), b"x")
    no_format = server.api("PUT", volume_url(host, pool, "a.img"), content=b"x")
    chunked = server.api(
        "PUT", volume_url(host, pool, "a.img"), params={"format": "raw"}, content=iter([b"x"])
    )
    no_pool = put(server, volume_url(host, unique_name(), "a.img"), b"x")

    assert (hidden.status_code, hidden.json()["field"]) == (422, "name")
    assert (no_format.status_code, no_format.json()["detail"]) == (422, "format: Field required")
    assert (chunked.status_code, chunked.json()["field"]) == (411, "size")
    assert (no_pool.status_code, no_pool.json()["field"]) == (404, "pool")
    assert pool_volumes(pool) == []


def test_an_upload_cut_off_midway_leaves_no_volume_and_the_audit_says_why(
    server: Server, host: int, pool: str
) -> None:
    url = volume_url(host, pool, "cut.img")
    conn = connection(server, url, announced=64 * MIB)
    conn.send(os.urandom(8 * MIB))
    conn.close()

    left = no_volumes_soon(pool)

    assert left == []
    deadline = time.monotonic() + 10
    while not (rows := audit_rows(server, f"volume:{pool}/cut.img (host {host})")):
        assert time.monotonic() < deadline, "no audit row for the cut-off upload"
        time.sleep(0.2)
    assert (rows[0]["result"], rows[0]["status_code"]) == ("failed", 422)
    assert rows[0]["error"].startswith("size: the upload ended after ")


def test_a_fifth_upload_at_once_is_turned_away_and_the_four_cut_off_leave_nothing(
    server: Server, host: int, pool: str
) -> None:
    running = [
        connection(server, volume_url(host, pool, f"{n}.img"), announced=8 * MIB) for n in range(4)
    ]
    for conn in running:
        conn.send(os.urandom(MIB))
    deadline = time.monotonic() + 10
    while len(pool_volumes(pool)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    fifth = put(server, volume_url(host, pool, "4.img"), os.urandom(MIB))
    for conn in running:
        conn.close()

    assert fifth.status_code == 429
    assert fifth.json()["detail"] == "4 uploads are running already; try again when one is done"
    assert no_volumes_soon(pool) == []
    assert put(server, volume_url(host, pool, "5.img"), b"after").status_code == 201


def test_an_image_reaches_a_host_over_ssh_through_the_libvirt_stream(
    server: Server, pool: str, ssh: SshHost
) -> None:
    remote = server.add_host(unique_name("over-ssh"), ssh.uri())
    data = os.urandom(8 * MIB)
    try:
        done = put(server, volume_url(remote, pool, "remote.iso"), data, "iso")
    finally:
        server.api("DELETE", f"/hosts/{remote}")

    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == sha256(stored(pool, "remote.iso")) == sha256(data)
