"""Backup digests: auto picks sha256 only on a CPU with SHA extensions, else blake3, and the
backup overview says which and why; verify follows the algorithm each file entry names (old
sha256 backups keep verifying, a flipped byte in a blake3 one is found), the API and the backup
page show it; an entry with no valid digest makes the backup corrupt, naming the file, and is
never restored."""

import hashlib
from pathlib import Path

import blake3
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.services.backups.digests import auto_hash, backup_hash, hash_rates
from app.services.backups.files import make_private_dirs, write_manifest
from tests.backups import WEB_1, add_backup
from tests.conftest import add_host, node_uri
from tests.polling import finished_job

XML, DISK = b"<domain/>", bytes(range(256)) * 256  # 64 KiB
X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3 sse4_1 sse4_2 avx avx2"
ARM_FEATURES = "fp asimd evtstrm aes pmull sha1 crc32 atomics fphp asimdhp cpuid"


def x86(*extra: str, cpus: int = 2) -> str:
    """/proc/cpuinfo of an x86 machine whose CPUs have these flags besides the usual ones."""
    return "\n".join(
        f"processor\t: {n}\nvendor_id\t: AuthenticAMD\nflags\t\t: {' '.join([X86_FLAGS, *extra])}"
        "\nbugs\t\t: sysret_ss_attrs\n"
        for n in range(cpus)
    )


def aarch64(*extra: str) -> str:
    """/proc/cpuinfo of an aarch64 machine whose CPU has these features besides the usual."""
    return f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join([ARM_FEATURES, *extra])}\n"


@pytest.mark.parametrize(
    ("cpuinfo", "extensions"),
    [
        (x86("sha_ni"), "with"),
        (x86(), "without"),
        (aarch64("sha2"), "with"),
        (aarch64(), "without"),
        (x86("sha_ni", cpus=1) + x86(cpus=1), "without"),  # not every CPU has them
        ("", "without"),
    ],
    ids=["x86-sha_ni", "x86-none", "aarch64-sha2", "aarch64-none", "x86-mixed", "empty"],
)
@pytest.mark.parametrize("faster", ["sha256", "blake3"])
def test_auto_picks_the_faster_hash_and_says_what_the_cpu_has(
    cpuinfo: str, extensions: str, faster: str
) -> None:
    rates = {"sha256": 1.5e9, "blake3": 1.5e9}
    rates[faster] = 3.2e9

    choice = auto_hash(cpuinfo, rates)

    assert choice.algorithm == faster
    shown = (
        "sha256 3.2 GB/s, blake3 1.5 GB/s"
        if faster == "sha256"
        else ("sha256 1.5 GB/s, blake3 3.2 GB/s")
    )
    assert choice.reason == f"auto: the faster here ({shown}; a CPU {extensions} SHA extensions)"


def test_both_hashes_are_timed_on_this_machine() -> None:
    rates = hash_rates(1 << 20)
    assert sorted(rates) == ["blake3", "sha256"] and all(r > 0 for r in rates.values())


def test_the_hash_comes_from_virtdeck_backup_hash_and_other_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIRTDECK_BACKUP_HASH", "blake3")
    chosen = backup_hash(Settings())
    monkeypatch.setenv("VIRTDECK_BACKUP_HASH", "auto")
    auto = backup_hash(Settings())
    monkeypatch.setenv("VIRTDECK_BACKUP_HASH", "md5")

    with pytest.raises(ValidationError, match="backup_hash"):
        Settings()
    assert (chosen.algorithm, chosen.reason) == ("blake3", "set by VIRTDECK_BACKUP_HASH")
    assert auto.algorithm in ("sha256", "blake3") and auto.reason.startswith("auto: the faster")
    assert backup_hash(Settings(backup_hash="auto")) == auto  # timed once per process


def test_the_backup_overview_says_which_hash_new_backups_get_and_why(make_client) -> None:
    chosen = make_client(backup_hash="blake3")
    auto = make_client()

    api = chosen.get("/api/v1/backups/overview").json()["hash"]
    page = chosen.get("/backups/overview").text
    auto_api = auto.get("/api/v1/backups/overview").json()["hash"]

    assert api == {"algorithm": "blake3", "reason": "set by VIRTDECK_BACKUP_HASH"}
    assert (
        "New backups' files are hashed with <strong>blake3</strong> "
        "(set by VIRTDECK_BACKUP_HASH)." in page
    )
    expected = backup_hash(auto.app.state.settings)
    assert auto_api == {"algorithm": expected.algorithm, "reason": expected.reason}


@pytest.fixture
def alpha(make_client) -> tuple[TestClient, dict, Path]:
    """An admin's client, host alpha (test driver) and the backup directory."""
    admin = make_client()
    host = add_host(admin, "alpha", node_uri("node-alpha.xml"))
    return admin, host, Path(admin.app.state.settings.backup_dir)


def stored(
    sessions: sessionmaker[Session],
    root: Path,
    host: dict,
    name: str,
    *,
    digests: dict[str, dict],
) -> int:
    """A succeeded backup with domain.xml and a disk image in the backup directory, each file's
    entry recording digests[file name] (keys and values as given); its id."""
    path = f"{host['name']}/{WEB_1}/{name}"
    directory = make_private_dirs(root, path)
    files = []
    for file, kind, data in (("domain.xml", "domain-xml", XML), ("disk-vda.raw", "disk", DISK)):
        (directory / file).write_bytes(data)
        files.append({"name": file, "kind": kind, "target": "vda" if kind == "disk" else None,
                      "format": "raw" if kind == "disk" else None, "size": len(data),
                      **digests[file]})  # fmt: skip
    manifest_sha256 = write_manifest(directory, {"files": files})
    return add_backup(sessions, host, path=path, files=files, manifest_sha256=manifest_sha256)


def sha256(data: bytes) -> dict[str, str]:
    """An entry's sha256 of data, as backups recorded it before blake3."""
    return {"sha256": hashlib.sha256(data).hexdigest()}


def b3(data: bytes) -> dict[str, str]:
    """An entry's blake3 of data."""
    return {"blake3": blake3.blake3(data).hexdigest()}


def flip(root: Path, client: TestClient, backup_id: int, name: str) -> None:
    """Change one byte of the backup's file."""
    directory = root / client.get(f"/api/v1/backups/{backup_id}").json()["path"]
    with open(directory / name, "r+b") as handle:
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_verify_follows_each_entrys_algorithm_and_the_api_and_page_show_it(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host, root = alpha
    by_sha256 = {"domain.xml": sha256(XML), "disk-vda.raw": sha256(DISK)}
    by_blake3 = {"domain.xml": b3(XML), "disk-vda.raw": b3(DISK)}
    old = stored(sessions, root, host, "old", digests=by_sha256)
    new = stored(sessions, root, host, "new", digests=by_blake3)
    flipped = stored(sessions, root, host, "flipped", digests=by_blake3)
    flip(root, admin, flipped, "disk-vda.raw")

    verified = {b: admin.post(f"/api/v1/backups/{b}/verify").json() for b in (old, new, flipped)}
    page = admin.get(f"/backups/{new}").text

    assert [verified[b]["status"] for b in (old, new, flipped)] == [
        "succeeded", "succeeded", "corrupt"
    ]  # fmt: skip
    assert verified[flipped]["error"] == "checksum mismatch: disk-vda.raw"
    old_disk, new_disk = verified[old]["files"][1], verified[new]["files"][1]
    assert (old_disk["algorithm"], old_disk["digest"], old_disk["sha256"]) == (
        "sha256", sha256(DISK)["sha256"], sha256(DISK)["sha256"]
    )  # fmt: skip
    assert (new_disk["algorithm"], new_disk["digest"], new_disk["sha256"]) == (
        "blake3", b3(DISK)["blake3"], None
    )  # fmt: skip
    assert (
        f'data-algorithm="blake3">blake3</span> <code class="sha256">{b3(DISK)["blake3"]}' in page
    )


BAD_ENTRIES = {
    "neither": ({"md5": "00" * 16}, "disk-vda.raw (no digest recorded: one of sha256, blake3)"),
    "both": (
        {**sha256(DISK), **b3(DISK)},
        "disk-vda.raw (more than one digest recorded: one of sha256, blake3)",
    ),
    "not hex": ({"blake3": "zz" * 32}, "disk-vda.raw (its blake3 is not 64 hex digits)"),
    "too short": (
        {"sha256": sha256(DISK)["sha256"][:40]},
        "disk-vda.raw (its sha256 is not 64 hex digits)",
    ),
    "upper case": (
        {"blake3": b3(DISK)["blake3"].upper()},
        "disk-vda.raw (its blake3 is not 64 hex digits)",
    ),
    "not a string": ({"sha256": 12345}, "disk-vda.raw (its sha256 is not 64 hex digits)"),
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_an_entry_without_one_valid_digest_is_corrupt_with_a_message_and_never_restored(
    alpha, sessions: sessionmaker[Session], bad: str
) -> None:
    admin, host, root = alpha
    recorded, reason = BAD_ENTRIES[bad]
    digests = {"domain.xml": b3(XML), "disk-vda.raw": recorded}
    to_restore = stored(sessions, root, host, "restore", digests=digests)
    to_verify = stored(sessions, root, host, "verify", digests=digests)

    shown = admin.get(f"/api/v1/backups/{to_restore}").json()["files"][1]
    page = admin.get(f"/backups/{to_restore}").text
    started = admin.post(
        f"/api/v1/backups/{to_restore}/restore", json={"mode": "new", "name": "web-1-again"}
    )
    job = finished_job(admin, started.json()["job"]["id"], timeout=30)
    verified = admin.post(f"/api/v1/backups/{to_verify}/verify").json()

    assert (shown["algorithm"], shown["digest"], shown["sha256"]) == (None, None, None)
    assert 'data-algorithm="">no valid digest</span>' in page
    assert job["status"] == "failed"
    assert job["error"] == f"the backup is corrupt ({reason}); nothing was restored"
    assert admin.get(f"/api/v1/backups/{to_restore}").json()["status"] == "corrupt"
    assert (verified["status"], verified["error"]) == ("corrupt", f"checksum mismatch: {reason}")
    assert "web-1-again" not in [g["name"] for g in admin.get("/api/v1/guests").json()["items"]]
