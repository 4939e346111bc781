"""A tiny bootable guest for the console tests, with a shell on its VGA screen and serial port.

`console_guest()` defines (and starts) a uniquely named guest (vdtest-console-<hex>) on the real
libvirtd that boots Debian's cloud kernel directly with an initramfs built here from
busybox-static: no disk, a VNC screen on 127.0.0.1, a PS/2 keyboard and a serial port whose
output libvirt logs to a file. Once booted it runs an interactive shell (prompt "# ", job
control, ^C works) on ttyS0 and on tty1 (the VGA screen); each prints READY as it starts, and
again after `exit`, when busybox's init starts it anew.

Everything written to ttyS0 lands in the serial log: the echo of what is typed into the serial
console, and the output of a command typed on the VGA screen that writes to /dev/ttyS0 (`echo hi
>/dev/ttyS0`). So a test types through noVNC or xterm.js and waits with `wait_for_log()` for the
command's output (not its echo: busybox's line editing wraps long input at 80 columns, and it
writes ESC [ 6 n after each prompt to ask the terminal for the cursor position).

KVM only where VT-x/AMD-V backs /dev/kvm, TCG otherwise (see domain_type()); start to READY takes
under 3 s with TCG. Needs root, libvirtd, busybox-static and the kernel that
`scripts/setup-system.sh --test` unpacks into /var/cache/virtdeck-test/vmlinuz.
"""

import gzip
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.libvirtd import IMAGES, virsh

KERNEL = Path("/var/cache/virtdeck-test/vmlinuz")
# The kernel's virtio drivers, in load order: with them the guest has a balloon and takes
# hot-plugged virtio disks and NICs.
MODULES = Path("/var/cache/virtdeck-test/modules")
VIRTIO_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "virtio_balloon", "virtio_blk", "failover", "net_failover", "virtio_net",
)  # fmt: skip
BUSYBOX = Path("/bin/busybox")
READY = "virtdeck-console-guest ready"
CMDLINE = "console=tty0 console=ttyS0 quiet panic=-1"

# /init mounts what a shell needs and hands PID 1 to busybox's init, which runs a shell on each
# tty of INITTAB in its own session with the tty as controlling tty (job control, ^C) and starts
# it again when it exits. A shell started with & from a script would not do: it ignores SIGINT
# for good, so ^C could not stop what it runs.
INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
for module in /lib/modules/*.ko; do [ -e "$module" ] && insmod "$module"; done
export PATH=/bin HOME=/ PS1='# '
# A guest told to burn its CPU (the usage tests) spins in the background from the start.
grep -q virtdeck_burn /proc/cmdline && { while :; do :; done & }
exec /bin/init
"""
# Each shell prints READY itself once its tty is open, so nothing typed after READY is lost.
INITTAB = f"""ttyS0::respawn:/bin/sh -c 'echo {READY}; exec sh -i'
tty1::respawn:/bin/sh -c 'echo {READY}; exec sh -i'
"""


def cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the "newc" format of (path, mode, data, (rdev major, minor)) entries."""
    out = bytearray()

    def add(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08x" % field for field in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(ino, name, mode, data, rdev)
    add(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def build_initramfs(path: Path, *, compress: bool = True, virtio: bool = False) -> None:
    """Write the guest's initramfs (busybox, /init, /etc/inittab, empty /dev /proc /sys /tmp),
    with virtio the virtio drivers that /init loads."""
    directory, executable = 0o040755, 0o100755
    entries = [
        ("bin", directory, b"", (0, 0)),
        ("bin/busybox", executable, BUSYBOX.read_bytes(), (0, 0)),
        ("dev", directory, b"", (0, 0)),
        # The kernel opens /dev/console for /init's stdio before devtmpfs is mounted.
        ("dev/console", 0o020600, b"", (5, 1)),
        ("etc", directory, b"", (0, 0)),
        ("etc/inittab", 0o100644, INITTAB.encode(), (0, 0)),
        ("proc", directory, b"", (0, 0)),
        ("sys", directory, b"", (0, 0)),
        ("tmp", 0o041777, b"", (0, 0)),
        ("init", executable, INIT.encode(), (0, 0)),
        ("lib", directory, b"", (0, 0)),
        ("lib/modules", directory, b"", (0, 0)),
    ]
    if virtio:  # /init loads them in the order of their names
        for number, module in enumerate(VIRTIO_MODULES):
            data = (MODULES / f"{module}.ko").read_bytes()
            entries.append((f"lib/modules/{number:02d}-{module}.ko", 0o100644, data, (0, 0)))
    archive = cpio_newc(entries)
    path.write_bytes(gzip.compress(archive, compresslevel=1, mtime=0) if compress else archive)


@dataclass(frozen=True)
class ConsoleGuest:
    """A console guest a test made."""

    name: str
    uuid: str
    serial_log: Path


def domain_type() -> str:
    """kvm where the CPU's virtualization extensions back /dev/kvm, else qemu (TCG)."""
    # Under kvm_pvm (nested KVM by shadow paging, no VT-x/SVM) SeaBIOS runs but this kernel
    # did not finish decompressing in 5 minutes; TCG boots it in under 3 s.
    hardware = any(Path(f"/sys/module/{m}").exists() for m in ("kvm_intel", "kvm_amd"))
    return "kvm" if hardware and Path("/dev/kvm").exists() else "qemu"


def console_domain_xml(
    name: str,
    guest_uuid: str,
    kernel: Path,
    initrd: Path,
    serial_log: Path,
    *,
    virtio: bool = False,
    burn: bool = False,
) -> str:
    """A 96 MiB, 1-vCPU, diskless guest booting kernel and initrd, with VNC and a logged serial
    port; with virtio, a virtio balloon (its initrd loads the drivers) and an empty CD-ROM
    drive hdc; with burn, a busy loop keeps its vCPU busy."""
    domain = ET.Element("domain", type=domain_type())
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = guest_uuid
    ET.SubElement(domain, "memory", unit="MiB").text = "96"
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(kernel)
    ET.SubElement(os_, "initrd").text = str(initrd)
    ET.SubElement(os_, "cmdline").text = CMDLINE + (" virtdeck_burn" if burn else "")
    # Without it libvirt runs QEMU with -no-acpi and the kernel logs an ACPI error on ttyS0.
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    devices = ET.SubElement(domain, "devices")
    if virtio:
        cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(cdrom, "driver", name="qemu", type="raw")
        ET.SubElement(cdrom, "target", dev="hdc", bus="ide")
        ET.SubElement(cdrom, "readonly")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(serial_log), append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    graphics = ET.SubElement(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    ET.SubElement(ET.SubElement(devices, "video"), "model", type="vga")
    ET.SubElement(devices, "input", type="keyboard", bus="ps2")
    ET.SubElement(devices, "memballoon", model="virtio" if virtio else "none")
    return ET.tostring(domain, encoding="unicode")


def read_log(guest: ConsoleGuest) -> str:
    """What the guest has written to its serial port so far ("" before the log exists)."""
    try:
        return guest.serial_log.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_log(guest: ConsoleGuest, text: str, timeout: float = 30) -> str:
    """Wait until the serial log contains text and return the log; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_log(guest)
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{text!r} not in the serial log of {guest.name} after {timeout} s:\n{log[-2000:]}"
            )
        time.sleep(0.1)


@contextmanager
def console_guest(
    tmp_path: Path,
    *,
    start: bool = True,
    timeout: float = 30,
    virtio: bool = False,
    burn: bool = False,
) -> Iterator[ConsoleGuest]:
    """Define a uniquely named console guest (with virtio: a balloon, the virtio drivers and a
    CD-ROM drive; with burn: a busy loop on its vCPU) and, with start, start it and wait for
    READY; destroy and undefine it and delete its files afterwards."""
    name = f"vdtest-console-{uuid.uuid4().hex[:10]}"
    guest = ConsoleGuest(name=name, uuid=str(uuid.uuid4()), serial_log=IMAGES / f"{name}.log")
    # Copies in the images directory, one per guest: libvirt relabels a guest's kernel and
    # initrd for QEMU and restores the owner when it stops, which would race on a shared file.
    kernel, initrd = IMAGES / f"{name}.vmlinuz", IMAGES / f"{name}.initrd"
    xml_file = tmp_path / f"{name}.xml"
    try:
        shutil.copyfile(KERNEL, kernel)
        build_initramfs(initrd, virtio=virtio)
        xml = console_domain_xml(
            name, guest.uuid, kernel, initrd, guest.serial_log, virtio=virtio, burn=burn
        )
        xml_file.write_text(xml)
        virsh("define", str(xml_file))
        if start:
            virsh("start", guest.uuid)
            wait_for_log(guest, READY, timeout)
        yield guest
    finally:
        virsh("destroy", guest.uuid, check=False)
        virsh("undefine", guest.uuid, check=False)
        for path in (kernel, initrd, guest.serial_log):
            path.unlink(missing_ok=True)
