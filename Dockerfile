# virtdeck web app. Talks to libvirtd on the Docker host through its socket
# (mount /var/run/libvirt) or to remote hosts by URI (qemu+ssh://, qemu+tls://).
# It listens on 0.0.0.0 inside the container; docker-compose.yml publishes it on 127.0.0.1.
FROM python:3.11-slim-bookworm

# libvirt-dev, pkg-config and gcc build libvirt-python (source-only on PyPI);
# libvirt-clients gives virsh for debugging, qemu-utils gives qemu-img for backups.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libvirt-dev pkg-config gcc libvirt-clients qemu-utils \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/virtdeck

# README.md* so the build works whether or not the project has a README yet.
COPY pyproject.toml README.md* ./
COPY app ./app
RUN pip install .

COPY migrations ./migrations
COPY alembic.ini ./
COPY templates ./templates
COPY static ./static

# Not root: the app reaches libvirtd through its socket (docker-compose.yml adds the socket's
# group) and needs no other privilege. A fixed uid so volume ownership stays the same across
# rebuilds.
RUN groupadd --system --gid 10001 virtdeck \
    && useradd --system --uid 10001 --gid virtdeck --home-dir /srv/virtdeck \
        --no-create-home --shell /usr/sbin/nologin virtdeck

# ./data (SQLite default, backups) lives on the /data volume, owned by virtdeck alone; a new
# named volume takes this ownership and mode.
RUN mkdir -p /data/backups && chown -R virtdeck:virtdeck /data && chmod -R 0700 /data \
    && ln -s /data /srv/virtdeck/data
VOLUME /data

USER virtdeck

EXPOSE 8000
CMD ["virtdeck", "serve", "--host", "0.0.0.0", "--port", "8000"]
