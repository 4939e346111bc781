"""The cloud-init NoCloud seed: the ISO, read back with pycdlib, holds the user-data and meta-data
asked for (user, keys, hostname, the user's own user-data) and never the plain password; bad
input is refused naming the field."""

import email
import io
import json
from dataclasses import replace

import pycdlib
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from passlib.hash import sha512_crypt

from app.errors import Invalid
from app.services.guest_create.cloud_init import CloudInit, check_cloud_init, seed
from app.services.guest_create.seed_iso import seed_iso

PASSWORD = "tr0ub4dor & 3"


def ssh_key(comment: str = "ops@desk") -> str:
    """A new Ed25519 public key line."""
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + f" {comment}"


def read_iso(data: bytes) -> dict[str, str]:
    """The ISO's label and its files by their Rock Ridge and Joliet names (which must agree)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    files = {"label": iso.pvd.volume_identifier.decode().strip()}
    for name in ("user-data", "meta-data"):
        rock, joliet = io.BytesIO(), io.BytesIO()
        iso.get_file_from_iso_fp(rock, rr_path=f"/{name}")
        iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
        assert rock.getvalue() == joliet.getvalue()
        files[name] = rock.getvalue().decode()
    iso.close()
    return files


def config(user_data: str) -> dict:
    """virtdeck's #cloud-config document, parsed (JSON is YAML)."""
    assert user_data.startswith("#cloud-config\n")
    return json.loads(user_data.removeprefix("#cloud-config\n"))


def test_the_seed_iso_holds_the_user_the_keys_and_the_hostname() -> None:
    keys = (ssh_key(), ssh_key("second key"))
    asked = CloudInit(user="debian", ssh_keys=keys, hostname="web-3.lab")

    files = read_iso(seed_iso(seed(asked, guest_name="web_3", instance_id="uuid-1")))

    assert files["label"] == "cidata"
    assert json.loads(files["meta-data"]) == {
        "instance-id": "uuid-1",
        "local-hostname": "web-3.lab",
    }
    assert config(files["user-data"]) == {
        "hostname": "web-3.lab",
        "users": [
            {
                "name": "debian",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "ssh_authorized_keys": list(keys),
            }
        ],
        "ssh_pwauth": False,
    }


def test_a_password_reaches_the_seed_only_as_a_sha512_crypt_hash() -> None:
    asked = CloudInit(user="ops", password=PASSWORD)

    made = seed(asked, guest_name="db-1", instance_id="uuid-2")
    iso = seed_iso(made)

    [user] = config(read_iso(iso)["user-data"])["users"]
    assert user["lock_passwd"] is False
    assert user["passwd"].startswith("$6$")
    assert sha512_crypt.verify(PASSWORD, user["passwd"])
    assert PASSWORD.encode() not in iso
    assert PASSWORD not in made.user_data + made.meta_data
    assert json.loads(read_iso(iso)["meta-data"])["local-hostname"] == "db-1"


@pytest.mark.parametrize(
    ("extra", "subtype"),
    [
        ("#cloud-config\npackages: [nginx]\n", "cloud-config"),
        ("#!/bin/sh\necho ünï\n", "x-shellscript"),
    ],
)
def test_the_users_own_user_data_follows_virtdecks_in_a_multipart_document(
    extra: str, subtype: str
) -> None:
    asked = CloudInit(user="ops", ssh_keys=(ssh_key(),), user_data=extra)

    files = read_iso(seed_iso(seed(asked, guest_name="web-1", instance_id="uuid-3")))

    parts = email.message_from_string(files["user-data"]).get_payload()
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", f"text/{subtype}"]
    assert config(parts[0].get_payload(decode=True).decode())["users"][0]["name"] == "ops"
    assert parts[1].get_payload(decode=True).decode() == extra


GOOD = CloudInit(user="ops", ssh_keys=(ssh_key(),))
# An RSA key's blob under the Ed25519 type.
MISLABELLED = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"
BAD = [
    (replace(GOOD, user="Root"), "cloud_init.user"),
    (replace(GOOD, user="a b"), "cloud_init.user"),
    (replace(GOOD, user="x" * 33), "cloud_init.user"),
    (replace(GOOD, user='ops"\nroot'), "cloud_init.user"),
    (replace(GOOD, ssh_keys=()), "cloud_init.ssh_keys"),
    (replace(GOOD, ssh_keys=("not a key",)), "cloud_init.ssh_keys"),
    (replace(GOOD, ssh_keys=('command="rm -rf /" ' + ssh_key(),)), "cloud_init.ssh_keys"),
    (replace(GOOD, ssh_keys=(MISLABELLED,)), "cloud_init.ssh_keys"),
    (replace(GOOD, ssh_keys=(ssh_key("bad\ncomment"),)), "cloud_init.ssh_keys"),
    (replace(GOOD, ssh_keys=(ssh_key(),) * 33), "cloud_init.ssh_keys"),
    (replace(GOOD, password=""), "cloud_init.password"),
    (replace(GOOD, password="x" * 1025), "cloud_init.password"),
    (replace(GOOD, password="\ud800"), "cloud_init.password"),
    (replace(GOOD, hostname="-web"), "cloud_init.hostname"),
    (replace(GOOD, hostname="a" * 64), "cloud_init.hostname"),
    (replace(GOOD, hostname="web\n"), "cloud_init.hostname"),
    (replace(GOOD, user_data="packages: [nginx]"), "cloud_init.user_data"),
    (replace(GOOD, user_data="#cloud-config\n" + "x" * 64 * 1024), "cloud_init.user_data"),
    (replace(GOOD, user_data="#!/bin/sh\n\x00"), "cloud_init.user_data"),
    (replace(GOOD, user_data="#!/bin/sh\n\ud800"), "cloud_init.user_data"),
]  # fmt: skip


@pytest.mark.parametrize(("asked", "field"), BAD)
def test_bad_cloud_init_input_is_refused_naming_the_field(asked: CloudInit, field: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_cloud_init(asked, guest_name="web-1")

    assert (refused.value.field, refused.value.message.split(": ")[0]) == (field, field)


def test_a_guest_name_that_is_no_hostname_needs_one_given() -> None:
    with pytest.raises(Invalid) as refused:
        check_cloud_init(GOOD, guest_name="web_1")

    assert refused.value.field == "cloud_init.hostname"
    check_cloud_init(replace(GOOD, hostname="web-1"), guest_name="web_1")
