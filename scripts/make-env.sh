#!/bin/sh
# Writes the .env that docker-compose.yml reads (`make env`): a random PostgreSQL password and the
# group id of the host's libvirt socket. Keys already in the file are kept; the file is mode 0600.
# Usage: scripts/make-env.sh [path]   (default: .env next to docker-compose.yml)
set -eu
env_file=${1:-$(dirname "$0")/../.env}
socket=${LIBVIRT_SOCK:-/var/run/libvirt/libvirt-sock}

umask 077
touch "$env_file"
chmod 600 "$env_file"
# A file whose last line has no newline would glue the next key onto it.
if [ -s "$env_file" ] && [ -n "$(tail -c 1 "$env_file")" ]; then
    echo >> "$env_file"
fi
has() { grep -q "^$1=" "$env_file"; }

if ! has POSTGRES_PASSWORD; then
    # hex: safe inside the database URL without escaping
    password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    echo "POSTGRES_PASSWORD=$password" >> "$env_file"
fi

if ! has LIBVIRT_GID; then
    gid=$(stat -c %g "$socket" 2>/dev/null || echo 0)
    if [ "$gid" = 0 ]; then
        gid=$(getent group libvirt | cut -d: -f3 || true)
        echo "note: $socket is not owned by a group the container can join; set" \
            "unix_sock_group = \"libvirt\", unix_sock_rw_perms = \"0770\" and" \
            "auth_unix_rw = \"none\" in /etc/libvirt/libvirtd.conf and restart libvirtd" >&2
    fi
    if [ -n "$gid" ]; then
        echo "LIBVIRT_GID=$gid" >> "$env_file"
    else
        echo "no libvirt group found: add LIBVIRT_GID=<gid of $socket> to $env_file" >&2
    fi
fi
echo "$env_file is ready (mode 0600; keep it out of version control)"
