"""Which libvirt URIs a host may be registered with."""

import pytest

from app.errors import Invalid
from app.virt.uri import validate_uri

ACCEPTED = [
    "qemu:///system",
    "qemu:///session",
    "qemu+ssh://root@kvm-1.example.org/system",
    "qemu+ssh://admin@10.0.0.5:2222/system?keyfile=/root/.ssh/id_ed25519&no_verify=1",
    "qemu+tls://kvm-2/system?pkipath=/etc/pki/virtdeck",
    "qemu+tcp://[fd00::5]:16509/system",
    "test:///default",
    "test:///srv/nodes/lab.xml",
    "test+tcp://127.0.0.1/default",
]

REFUSED = [
    ("", "required"),
    ("xen:///system", "scheme 'xen' is not supported"),
    ("lxc:///", "scheme 'lxc' is not supported"),
    ("qemu+ext:///system?command=/bin/sh", "scheme 'qemu+ext'"),
    ("qemu+ssh://-oProxyCommand=touch%20x/system", "host name"),
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
]


@pytest.mark.parametrize("uri", ACCEPTED)
def test_supported_uris_are_accepted(uri: str) -> None:
    assert validate_uri(f"  {uri} ") == uri


@pytest.mark.parametrize(("uri", "reason"), REFUSED)
def test_unsafe_or_unsupported_uris_are_refused_naming_the_field(uri: str, reason: str) -> None:
    with pytest.raises(Invalid) as refused:
        validate_uri(uri)
    assert refused.value.field == "uri"
    assert refused.value.message.startswith("uri: ")
    assert reason in refused.value.message
