"""The deployment files (docker-compose.yml, Dockerfile, .ci/run) describe a working setup.

No Docker engine runs here, so these tests read the files and check the wiring that a typo
would silently break: ports, database URL, libvirt socket, health-gated start-up, volumes.
"""

import json
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def app(compose: dict) -> dict:
    return compose["services"]["app"]


@pytest.fixture(scope="module")
def db(compose: dict) -> dict:
    return compose["services"]["db"]


def _environment(service: dict) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _volume_pairs(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, from short ("src:dst[:mode]") or long syntax."""
    pairs = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        pairs.append((source, target))
    return pairs


def _published_ports(service: dict) -> set[tuple[str, str]]:
    """(host port, container port) pairs of a service."""
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add((str(port.get("published")), str(port["target"])))
        else:
            *host, container = str(port).split(":")
            ports.add((host[-1] if host else "", container.split("/")[0]))
    return ports


def _dockerfile_cmd() -> list[str]:
    """The argv of the Dockerfile's last CMD (exec or shell form)."""
    cmds = [
        line.split(None, 1)[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip().upper().startswith("CMD ")
    ]
    assert cmds, "Dockerfile has no CMD"
    cmd = cmds[-1].strip()
    return json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)


def test_compose_defines_app_and_database_services(compose: dict) -> None:
    assert {"app", "db"} <= set(compose["services"])


def test_app_is_reachable_on_port_8000(app: dict) -> None:
    assert ("8000", "8000") in _published_ports(app)


def test_app_uses_postgresql_on_the_db_service(app: dict, db: dict) -> None:
    url = urlsplit(_environment(app)["VIRTDECK_DATABASE_URL"])
    db_env = _environment(db)
    assert url.scheme == "postgresql+psycopg"
    assert url.hostname == "db"
    assert (url.port or 5432) == 5432
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == db_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]


def test_app_can_reach_the_host_libvirt_socket(app: dict) -> None:
    mounts = dict(_volume_pairs(app))
    socket_dirs = {"/var/run/libvirt", "/run/libvirt"}
    assert any(
        source in socket_dirs and target in socket_dirs for source, target in mounts.items()
    ), f"no libvirt socket mount in {mounts}"
    assert _environment(app).get("VIRTDECK_DEFAULT_HOST_URI") == "qemu:///system"


def test_app_starts_only_after_the_database_is_healthy(app: dict) -> None:
    depends_on = app["depends_on"]
    assert isinstance(depends_on, dict), "depends_on must use the long form to carry a condition"
    assert depends_on["db"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["app", "db"])
def test_every_service_has_a_healthcheck(compose: dict, service: str) -> None:
    healthcheck = compose["services"][service].get("healthcheck") or {}
    assert healthcheck.get("test"), f"{service} has no healthcheck"
    assert not healthcheck.get("disable", False)


def test_app_healthcheck_probes_healthz(app: dict) -> None:
    test = app["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    assert "http://127.0.0.1:8000/healthz" in text


def test_database_keeps_its_data_in_a_declared_named_volume(compose: dict, db: dict) -> None:
    named = set(compose.get("volumes") or {})
    data_volumes = [s for s, t in _volume_pairs(db) if t == "/var/lib/postgresql/data"]
    assert data_volumes, "db does not persist /var/lib/postgresql/data"
    assert data_volumes[0] in named, f"{data_volumes[0]} is not declared under top-level volumes"


def test_backups_survive_container_rebuilds_in_a_named_volume(compose: dict, app: dict) -> None:
    named = set(compose.get("volumes") or {})
    assert any(s in named and t == "/data/backups" for s, t in _volume_pairs(app))


def test_docker_image_starts_virtdeck_serve_on_all_interfaces() -> None:
    cmd = _dockerfile_cmd()
    assert cmd[:2] == ["virtdeck", "serve"]
    assert "0.0.0.0" in cmd
    assert "8000" in cmd


def test_ci_entry_point_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    lines = [line.strip() for line in script.read_text().splitlines()]
    assert any(line in ("make test", "exec make test") for line in lines)
    assert script.stat().st_mode & 0o111, ".ci/run is not executable"
