"""Which libvirt URIs a host may be registered with, and what is kept of them."""

import os
from pathlib import Path

import pytest

from app.errors import Invalid
from app.virt.uri import validate_uri

ACCEPTED = [
    "qemu:///system",
    "qemu:///session",
    "qemu+ssh://root@kvm-1.example.org/system",
    "qemu+ssh://admin@10.0.0.5:2222/system?keyfile=/root/.ssh/id_ed25519&no_verify=1",
    "qemu+ssh://kvm-1/system?known_hosts=/etc/virtdeck/known_hosts&known_hosts_verify=normal",
    "qemu+tls://kvm-2/system?pkipath=/etc/pki/virtdeck",
    "qemu+tcp://[fd00::5]:16509/system",
    "test:///default",
    "test+tcp://127.0.0.1/default",
]

REFUSED = [
    ("", "required"),
    ("xen:///system", "scheme 'xen' is not supported"),
    ("lxc:///", "scheme 'lxc' is not supported"),
    ("qemu+ext:///system?command=/bin/sh", "scheme 'qemu+ext'"),
    ("qemu+ssh://-oProxyCommand=touch%20x/system", "'%'"),
    ("qemu+ssh://-oProxyCommand=touch/system", "host name"),
    ("qemu+ssh://user@-evil/system", "host name '-evil'"),
    ("qemu+ssh://kvm-1/system?command=/bin/sh", "query parameter 'command'"),
    ("qemu+ssh://kvm-1/system?netcat=/tmp/nc", "query parameter 'netcat'"),
    ("qemu:///system?socket=/tmp/evil.sock", "query parameter 'socket'"),
    ("qemu+ssh://kvm-1/system?proxy=netcat", "query parameter 'proxy'"),
    ("qemu+ssh://root:secret@kvm-1/system", "password"),
    ("qemu+ssh:///system", "needs a host name"),
    ("qemu+tcp://kvm-1:99999/system", "port"),
    ("qemu://kvm-1/system", "is local"),
    ("qemu:///root", "/system or /session"),
    ("qemu:///system#x", "fragment"),
    ("qemu:///system ; rm -rf /", "spaces"),
    ("test:default", "needs a path"),
    ("test:///tmp/<img src=x>.xml", "not allowed"),
    ('qemu+ssh://kvm"1/system', "not allowed"),
    # libvirt splits the query on ';' as well as '&' (virURIParseParams); Python does not.
    ("qemu+ssh://h/system?no_tty=1;command=/bin/bash", "';'"),
    ("qemu:///system?no_verify=1;socket=/tmp/x", "';'"),
    # libvirt unescapes names and values after splitting: an escaped ';' is no separator, but
    # nothing escaped is kept, so what is stored is what was checked.
    ("qemu+ssh://h/system?no_tty=1%3Bcommand=/bin/bash", "'%'"),
    ("qemu:///system?no_verify=1%3bsocket=/tmp/x", "'%'"),
    ("qemu:///system?%73ocket=/tmp/x", "'%'"),
    # parse_qsl reads '+' as a space, libvirt as '+'.
    ("qemu+ssh://h/system?keyfile=/a+b", "query parameter 'keyfile'"),
    ("qemu+ssh://h/system?no_tty=yes", "query parameter 'no_tty'"),
    ("qemu+ssh://h/system?keyfile=relative/key", "query parameter 'keyfile'"),
    ("qemu+ssh://h/system?no_tty", "name=value"),
    ("qemu+ssh://h/system?no_tty=1&&no_verify=1", "name=value"),
    ("test:///etc/passwd", "test-driver files are turned off"),
    ("test+tcp://127.0.0.1/etc/passwd", "test-driver files are turned off"),
    ("test:///", "test:///default"),
]


@pytest.mark.parametrize("uri", ACCEPTED)
def test_supported_uris_are_accepted_as_written(uri: str) -> None:
    assert validate_uri(f"  {uri} ") == uri


def test_the_uri_kept_is_rebuilt_from_its_checked_parts() -> None:
    assert validate_uri("QEMU+SSH://root@KVM-1:/system?") == "qemu+ssh://root@kvm-1/system"


@pytest.mark.parametrize(("uri", "reason"), REFUSED)
def test_unsafe_or_unsupported_uris_are_refused_naming_the_field(uri: str, reason: str) -> None:
    with pytest.raises(Invalid) as refused:
        validate_uri(uri, test_driver_dir="")
    assert refused.value.field == "uri"
    assert refused.value.message.startswith("uri: ")
    assert reason in refused.value.message


def test_test_driver_files_are_accepted_only_under_the_configured_directory(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "nodes"
    (allowed / "lab").mkdir(parents=True)
    (allowed / "lab" / "node.xml").write_text("<node/>")
    outside = tmp_path / "secret.xml"
    outside.write_text("<node/>")
    os.symlink(outside, allowed / "link.xml")
    os.symlink(tmp_path, allowed / "up")
    directory = f"{allowed}/lab/.."  # the setting is normalised too

    assert validate_uri(f"test://{allowed}/lab/node.xml", test_driver_dir=directory) == (
        f"test://{allowed}/lab/node.xml"
    )
    assert validate_uri(f"test://{allowed}/lab/./node.xml", test_driver_dir=directory) == (
        f"test://{allowed}/lab/node.xml"
    )
    assert validate_uri("test:///default", test_driver_dir=directory) == "test:///default"
    for escape in (
        f"test://{allowed}/../secret.xml",
        f"test://{allowed}/lab/../../secret.xml",
        f"test://{allowed}/link.xml",
        f"test://{allowed}/up/secret.xml",
        "test:///etc/passwd",
        f"test://{allowed}",
    ):
        with pytest.raises(Invalid) as refused:
            validate_uri(escape, test_driver_dir=directory)
        assert refused.value.field == "uri", escape
        assert f"under {allowed}" in refused.value.message, escape
