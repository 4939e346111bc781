"""What a new guest's cloud-init NoCloud seed says: its user (name, password hash, SSH keys), its
hostname and the user's own user-data, checked and written as documents cloud-init reads.

Every value comes from outside: each is checked against a narrow shape, and the documents are
JSON (which is YAML) or MIME built by libraries, never text pasted together. The password is
hashed here (SHA-512 crypt); the plain one goes no further than this module.
"""

import base64
import binascii
import json
import re
import struct
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from passlib.hash import sha512_crypt

from app.errors import Invalid

USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USER_RULE = "1-32 lower-case letters, digits, '_' or '-', starting with a letter or '_'"
# RFC 1123 labels joined by dots.
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$){LABEL}(\.{LABEL})*")
KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})  # fmt: skip
MAX_KEYS = 32
MAX_KEY = 16 * 1024
MAX_COMMENT = 255
MAX_PASSWORD = 1024
MAX_USER_DATA = 64 * 1024
# The kinds of user-data accepted from the user, by their first line, as cloud-init tells them.
USER_DATA_KINDS = {"#cloud-config": "cloud-config", "#!": "x-shellscript"}
SUDO = "ALL=(ALL) NOPASSWD:ALL"


@dataclass(frozen=True)
class CloudInit:
    """What cloud-init sets up in the new guest; nothing in it is trusted yet."""

    user: str
    password: str | None = None
    ssh_keys: tuple[str, ...] = ()
    # None: the guest's name.
    hostname: str | None = None
    # More user-data of the user's own, applied after virtdeck's.
    user_data: str | None = None


@dataclass(frozen=True)
class Seed:
    """The documents of a NoCloud seed: user-data and meta-data."""

    user_data: str
    meta_data: str


def check_user(user: str) -> None:
    """A cloud-init user name follows the rule."""
    if not USER.fullmatch(user or ""):
        raise Invalid(f"cloud_init.user: {USER_RULE}", field="cloud_init.user")


def _key_blob_type(blob: str) -> str | None:
    """The key type the base64 key blob names in its first field, or None if it is not one."""
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) < 4:
        return None
    length = struct.unpack_from(">I", data)[0]
    return data[4 : 4 + length].decode("ascii", "replace") if 4 + length <= len(data) else None


def check_ssh_keys(keys: tuple[str, ...]) -> None:
    """Each key is one OpenSSH public key line: a known type, its base64 blob, a comment."""
    field = "cloud_init.ssh_keys"
    if len(keys) > MAX_KEYS:
        raise Invalid(f"{field}: at most {MAX_KEYS} keys", field=field)
    for number, key in enumerate(keys, start=1):
        parts = key.split(maxsplit=2)
        comment = parts[2] if len(parts) == 3 else ""
        if (
            len(key) > MAX_KEY
            or not key.isprintable()
            or len(parts) < 2
            or parts[0] not in KEY_TYPES
            or _key_blob_type(parts[1]) != parts[0]
            or len(comment) > MAX_COMMENT
        ):
            raise Invalid(
                f"{field}: key {number} is not an OpenSSH public key line "
                f"(type, base64 key, optional comment; types: {', '.join(sorted(KEY_TYPES))})",
                field=field,
            )


def hostname(cloud_init: CloudInit, guest_name: str) -> str:
    """The guest's hostname: the one asked for, or its name when that is a hostname."""
    name = cloud_init.hostname if cloud_init.hostname is not None else guest_name
    if not HOSTNAME.fullmatch(name):
        raise Invalid(
            "cloud_init.hostname: letters, digits and '-' in dot-separated labels of at most "
            "63 characters, 253 in all"
            + ("" if cloud_init.hostname is not None else "; the guest's name is not one"),
            field="cloud_init.hostname",
        )
    return name


def _utf8(text: str, field: str) -> bytes:
    """The text as UTF-8, or Invalid when it has no UTF-8 form (a lone surrogate)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise Invalid(f"{field}: text that UTF-8 can hold", field=field) from None


def _user_data_kind(text: str) -> str:
    """The MIME subtype of the user's own user-data, or Invalid."""
    field = "cloud_init.user_data"
    if len(_utf8(text, field)) > MAX_USER_DATA:
        raise Invalid(f"{field}: at most {MAX_USER_DATA // 1024} KiB", field=field)
    if "\x00" in text:
        raise Invalid(f"{field}: text without NUL characters", field=field)
    for start, kind in USER_DATA_KINDS.items():
        if text.startswith(start):
            return kind
    raise Invalid(f"{field}: starts with #cloud-config or #! (a script)", field=field)


def check_cloud_init(cloud_init: CloudInit, *, guest_name: str) -> None:
    """Everything cloud-init is asked to set up is acceptable; Invalid naming the field if not."""
    check_user(cloud_init.user)
    password = cloud_init.password
    if (
        password is not None
        and not 1 <= len(_utf8(password, "cloud_init.password")) <= MAX_PASSWORD
    ):
        raise Invalid(
            f"cloud_init.password: 1 to {MAX_PASSWORD} bytes", field="cloud_init.password"
        )
    check_ssh_keys(cloud_init.ssh_keys)
    if cloud_init.password is None and not cloud_init.ssh_keys:
        raise Invalid(
            "cloud_init.ssh_keys: give SSH keys or a password, or the user cannot log in",
            field="cloud_init.ssh_keys",
        )
    hostname(cloud_init, guest_name)
    if cloud_init.user_data is not None:
        _user_data_kind(cloud_init.user_data)


def _config(cloud_init: CloudInit, host: str) -> str:
    """virtdeck's own #cloud-config document."""
    user: dict[str, object] = {"name": cloud_init.user, "sudo": SUDO, "shell": "/bin/bash"}
    if cloud_init.password is not None:
        user |= {"lock_passwd": False, "passwd": sha512_crypt.hash(cloud_init.password)}
    if cloud_init.ssh_keys:
        user["ssh_authorized_keys"] = list(cloud_init.ssh_keys)
    config = {
        "hostname": host,
        "users": [user],
        "ssh_pwauth": cloud_init.password is not None,
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def seed(cloud_init: CloudInit, *, guest_name: str, instance_id: str) -> Seed:
    """The checked request's seed documents; the user's own user-data follows virtdeck's in a
    MIME multipart document, which cloud-init reads part by part."""
    check_cloud_init(cloud_init, guest_name=guest_name)
    host = hostname(cloud_init, guest_name)
    meta_data = json.dumps({"instance-id": instance_id, "local-hostname": host}) + "\n"
    config = _config(cloud_init, host)
    if cloud_init.user_data is None:
        return Seed(user_data=config, meta_data=meta_data)
    document = MIMEMultipart()
    document.attach(MIMEText(config, "cloud-config"))  # ASCII: json.dumps escapes the rest
    kind = _user_data_kind(cloud_init.user_data)
    document.attach(MIMEText(cloud_init.user_data, kind, "utf-8"))
    return Seed(user_data=document.as_string(), meta_data=meta_data)
