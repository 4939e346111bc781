# virtdeck web app. Talks to libvirtd on the Docker host through its socket
# (mount /var/run/libvirt) or to remote hosts by URI (qemu+ssh://, qemu+tls://).
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

# ./data (SQLite default, backups) lives on the /data volume.
RUN mkdir -p /data/backups && ln -s /data /srv/virtdeck/data
VOLUME /data

EXPOSE 8000
CMD ["virtdeck", "serve", "--host", "0.0.0.0", "--port", "8000"]
