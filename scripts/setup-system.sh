#!/usr/bin/env bash
# Install and start what virtdeck needs from the system (Debian 12, no systemd needed).
#   scripts/setup-system.sh          packages + libvirtd for running virtdeck
#   scripts/setup-system.sh --test   also Chromium, PostgreSQL (+ role virtdeck), iptables,
#                                    iproute2, busybox-static, openssh-server, a guest kernel,
#                                    isolinux, syslinux-common, xorriso (a test installer ISO)
# Idempotent: when everything is present and running it only checks, quietly.
set -euo pipefail

TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "setup-system: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

say() { echo "setup-system: $*"; }

as_postgres() {
    # Run from / so psql does not complain that postgres cannot read the current directory.
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres -- "$@")
    fi
}

# --- packages --------------------------------------------------------------------------------
PACKAGES=(libvirt-daemon-system qemu-system-x86 qemu-utils libvirt-dev pkg-config gcc
          python3-venv python3-dev)
if [ "$TEST" -eq 1 ]; then
    PACKAGES+=(chromium postgresql iptables iproute2 busybox-static openssh-server
               isolinux syslinux-common xorriso)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# --- /dev/kvm: QEMU runs as libvirt-qemu (group kvm) ----------------------------------------
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
    if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
        say "making /dev/kvm usable for group kvm"
        "${SUDO[@]}" chgrp kvm /dev/kvm
        "${SUDO[@]}" chmod 660 /dev/kvm
    fi
fi

# --- libvirt daemons (no systemd here) -------------------------------------------------------
if ! pgrep -x virtlogd >/dev/null; then
    say "starting virtlogd"
    "${SUDO[@]}" virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    say "starting libvirtd"
    "${SUDO[@]}" libvirtd -d
fi
for _ in $(seq 1 40); do
    if "${SUDO[@]}" virsh -c qemu:///system version >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done
if ! "${SUDO[@]}" virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "setup-system: libvirtd does not answer on qemu:///system" >&2
    exit 1
fi

[ "$TEST" -eq 1 ] || exit 0

# --- a kernel for the console test guests (tests/console_guest.py) --------------------------
# Debian's cloud kernel has the VGA and serial consoles, the PS/2 keyboard, devtmpfs and ACPI PCI
# hot-plug built in; its virtio drivers (the balloon, hot-plugged disks and NICs) are modules.
# Only its vmlinuz and those modules are unpacked into a cache: installing the package would put
# it into /boot.
KERNEL=/var/cache/virtdeck-test/vmlinuz
MODULES=/var/cache/virtdeck-test/modules
kernel_package() {
    apt-cache depends linux-image-cloud-amd64 \
        | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1
}
if [ ! -s "$KERNEL" ] || [ ! -s "$MODULES/virtio_balloon.ko" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # As root apt fetches as user _apt, which must be able to write the directory.
    [ "$(id -u)" -ne 0 ] || chown _apt "$work"
    pkg=$(kernel_package)
    if [ -z "$pkg" ] || ! (cd "$work" && apt-get download -qq "$pkg" 2>/dev/null); then
        # Stale package lists name a kernel the mirror no longer has.
        "${SUDO[@]}" apt-get update -qq
        pkg=$(kernel_package)
        (cd "$work" && apt-get download -qq "$pkg")
    fi
    say "unpacking the kernel of $pkg into $KERNEL"
    mkdir "$work/root"
    dpkg-deb --fsys-tarfile "$work/$pkg"_*.deb \
        | tar -x -C "$work/root" --wildcards './boot/vmlinuz-*' \
            './lib/modules/*/kernel/drivers/virtio/*.ko' \
            './lib/modules/*/kernel/drivers/block/virtio_blk.ko' \
            './lib/modules/*/kernel/drivers/net/virtio_net.ko' \
            './lib/modules/*/kernel/drivers/net/net_failover.ko' \
            './lib/modules/*/kernel/net/core/failover.ko'
    "${SUDO[@]}" install -D -m 644 "$(ls "$work"/root/boot/vmlinuz-* | head -1)" "$KERNEL"
    "${SUDO[@]}" install -d "$MODULES"
    "${SUDO[@]}" install -m 644 $(find "$work/root/lib/modules" -name '*.ko') "$MODULES"
    rm -rf "$work"
    trap - EXIT
fi

# --- PostgreSQL for the tests ----------------------------------------------------------------
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    say "starting PostgreSQL $version"
    "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 40); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 0.5
    done
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "setup-system: PostgreSQL does not answer on 127.0.0.1:5432" >&2
        exit 1
    fi
fi

# Role virtdeck/virtdeck with LOGIN and CREATEDB, so that
# postgresql+psycopg://virtdeck:virtdeck@127.0.0.1:5432/postgres works with trust or md5/scram.
role=$(as_postgres psql -XtAc \
    "SELECT rolcanlogin AND rolcreatedb AND rolpassword IS NOT NULL
       FROM pg_authid WHERE rolname = 'virtdeck'")
if [ -z "$role" ]; then
    say "creating PostgreSQL role virtdeck"
    as_postgres psql -XqtAc "CREATE ROLE virtdeck LOGIN CREATEDB PASSWORD 'virtdeck'"
elif [ "$role" != "t" ]; then
    say "fixing PostgreSQL role virtdeck (LOGIN, CREATEDB, password)"
    as_postgres psql -XqtAc "ALTER ROLE virtdeck LOGIN CREATEDB PASSWORD 'virtdeck'"
fi
