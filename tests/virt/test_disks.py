"""The disk reader's rules, on `<disk>` XML as libvirt writes it: which disks hold the guest's
own data (backed up, removable with it) and why the others do not."""

import xml.etree.ElementTree as ET

import pytest

from app.virt.disks import Aside, Disk, read_disk, read_disks


def disk(xml: str) -> Disk:
    """The disk one `<disk>` element describes."""
    return read_disk(ET.fromstring(xml))


QCOW2 = """
<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/var/lib/libvirt/images//web.qcow2'/>
  <backingStore type='file'>
    <format type='qcow2'/>
    <source file='/var/lib/libvirt/images/base.qcow2'/>
    <backingStore type='file'>
      <format type='raw'/>
      <source file='/var/lib/libvirt/images/golden.raw'/>
      <backingStore/>
    </backingStore>
  </backingStore>
  <target dev='vda' bus='virtio'/>
</disk>"""


def test_a_plain_file_disk_holds_the_guests_data() -> None:
    read = disk(QCOW2)

    assert (read.device, read.kind, read.format) == ("disk", "file", "qcow2")
    assert (read.target, read.bus) == ("vda", "virtio")
    assert read.path == "/var/lib/libvirt/images/web.qcow2"
    assert read.holds_data and read.aside is None
    assert [(b.path, b.format) for b in read.backing] == [
        ("/var/lib/libvirt/images/base.qcow2", "qcow2"),
        ("/var/lib/libvirt/images/golden.raw", "raw"),
    ]


def test_a_cdrom_is_media_not_data() -> None:
    read = disk("""
        <disk type='file' device='cdrom'>
          <driver name='qemu' type='raw'/>
          <source file='/srv/iso/debian.iso'/>
          <target dev='sda' bus='sata'/>
          <readonly/>
        </disk>""")

    assert read.is_media and read.readonly
    assert read.aside is Aside.NOT_A_DISK
    assert not read.holds_data


def test_an_empty_cdrom_drive_has_no_source() -> None:
    read = disk("<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>")

    assert read.is_empty and read.is_media
    assert (read.source, read.path) == (None, None)
    assert not read.holds_data


def test_an_empty_disk_drive_is_set_aside_as_empty() -> None:
    read = disk("<disk type='file' device='disk'><target dev='vdb' bus='virtio'/></disk>")

    assert read.aside is Aside.EMPTY
    assert not read.holds_data


@pytest.mark.parametrize(
    ("marker", "kind", "source", "aside"),
    [
        ("readonly", "file", "file='/srv/shared/reference.img'", Aside.READONLY),
        ("shareable", "block", "dev='/dev/vg0/cluster'", Aside.SHAREABLE),
    ],
)
def test_read_only_and_shareable_disks_are_not_the_guests_data(
    marker: str, kind: str, source: str, aside: Aside
) -> None:
    read = disk(
        f"<disk type='{kind}' device='disk'><source {source}/><target dev='vdb'/><{marker}/></disk>"
    )

    assert (read.readonly, read.shareable) == (marker == "readonly", marker == "shareable")
    assert read.aside is aside
    assert not read.holds_data


def test_a_block_disk_has_its_device_as_path() -> None:
    read = disk("""
        <disk type='block' device='disk'>
          <driver name='qemu' type='raw'/>
          <source dev='/dev/vg0/db'/>
          <target dev='vdb' bus='virtio'/>
        </disk>""")

    assert (read.kind, read.path, read.format) == ("block", "/dev/vg0/db", "raw")
    assert read.holds_data


def test_a_network_disk_has_no_host_path_but_is_the_guests_data() -> None:
    read = disk("""
        <disk type='network' device='disk'>
          <driver name='qemu' type='raw'/>
          <source protocol='rbd' name='vms/db'><host name='ceph1' port='6789'/></source>
          <target dev='vdb'/>
        </disk>""")
    nameless = disk("""
        <disk type='network' device='disk'>
          <source protocol='nbd'><host name='nbd1' port='10809'/></source>
          <target dev='vdc'/>
        </disk>""")

    assert (read.kind, read.source, read.path) == ("network", "vms/db", None)
    assert read.holds_data
    assert (nameless.source, nameless.is_empty) == ("nbd", False)


def test_a_pool_volume_disk_names_its_pool_and_volume() -> None:
    read = disk("""
        <disk type='volume' device='disk'>
          <source pool='default' volume='web.qcow2'/>
          <target dev='vda'/>
        </disk>""")

    assert (read.pool, read.volume, read.source, read.path) == (
        "default",
        "web.qcow2",
        "default/web.qcow2",
        None,
    )


@pytest.mark.parametrize("device", ["floppy", "lun"])
def test_floppies_and_luns_are_not_plain_disks(device: str) -> None:
    read = disk(f"<disk type='block' device='{device}'><source dev='/dev/sdz'/></disk>")

    assert read.aside is Aside.NOT_A_DISK
    assert read.is_media == (device == "floppy")


def test_a_writable_disk_named_like_an_iso_is_set_aside() -> None:
    read = disk("<disk type='file' device='disk'><source file='/srv/x/INSTALL.ISO'/></disk>")

    assert read.aside is Aside.ISO


def test_a_domain_s_disks_are_read_in_order() -> None:
    domain = ET.fromstring(f"""
        <domain><devices>{QCOW2}
          <disk type='file' device='cdrom'><target dev='sda'/></disk>
        </devices></domain>""")

    assert [d.target for d in read_disks(domain)] == ["vda", "sda"]
