"""The deployment files (docker-compose.yml, Dockerfile, .ci/run) describe a working setup.

No Docker engine runs here, so these tests read the files and check the wiring that a typo
would silently break: ports, database URL, libvirt socket, health-gated start-up, volumes; and
that the defaults are safe: loopback only, secrets from .env (written by scripts/make-env.sh),
not root.
"""

import json
import os
import re
import shlex
import subprocess
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


# What scripts/make-env.sh would write; compose substitutes it into the file.
SAMPLE_ENV = {"POSTGRES_PASSWORD": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "LIBVIRT_GID": "119"}
VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} substitution, for these tests."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, kind, text = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise LookupError(f"{name}: {text}")
        return text if kind == "-" else ""

    return VARIABLE.sub(substitute, value)


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


def test_the_worker_runs_beside_the_app_with_the_same_settings_socket_and_backups(
    compose: dict, app: dict
) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["virtdeck", "worker"]
    assert "--no-worker" in app["command"] and app["command"][:2] == ["virtdeck", "serve"]
    for key in ("build", "environment", "group_add", "volumes", "depends_on"):
        assert worker[key] == app[key], key
    assert not worker.get("ports")


def test_app_is_reachable_on_port_8000(app: dict) -> None:
    assert ("8000", "8000") in _published_ports(app)


def test_app_uses_postgresql_on_the_db_service(app: dict, db: dict) -> None:
    url = urlsplit(interpolate(_environment(app), SAMPLE_ENV)["VIRTDECK_DATABASE_URL"])
    db_env = interpolate(_environment(db), SAMPLE_ENV)
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


def test_published_ports_listen_on_the_loopback_address_only(compose: dict) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_the_database_password_comes_from_the_environment_and_is_required(
    compose: dict,
) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD: virtdeck" not in text and "virtdeck:virtdeck@" not in text
    for service in ("app", "db"):
        env = _environment(compose["services"][service])
        with pytest.raises(LookupError, match=r"POSTGRES_PASSWORD: .*make env"):
            interpolate(env, {})  # compose refuses to start without it, saying how to make it
    assert (
        interpolate(_environment(compose["services"]["db"]), SAMPLE_ENV)["POSTGRES_PASSWORD"]
        == SAMPLE_ENV["POSTGRES_PASSWORD"]
    )


def _dockerfile_user() -> str:
    """The user of the Dockerfile's last USER before its CMD (root when there is none)."""
    user = "root"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "USER":
            user = words[1].split(":")[0]
    return user


def test_the_app_runs_as_a_user_in_the_libvirt_socket_group(app: dict) -> None:
    assert _dockerfile_user() not in ("root", "0")
    groups = [str(group) for group in interpolate(app.get("group_add") or [], SAMPLE_ENV)]
    assert SAMPLE_ENV["LIBVIRT_GID"] in groups
    with pytest.raises(LookupError, match=r"LIBVIRT_GID: .*make env"):
        interpolate(app["group_add"], {})


def test_make_env_writes_a_private_env_once_with_a_random_password(tmp_path: Path) -> None:
    socket = tmp_path / "libvirt-sock"
    socket.touch()
    os.chown(socket, -1, 4242)  # the group libvirtd gives its socket (unix_sock_group)
    env_file = tmp_path / ".env"
    env_file.write_text("VIRTDECK_SYNC_INTERVAL=5")  # kept, even without a final newline
    run = [str(ROOT / "scripts" / "make-env.sh"), str(env_file)]
    environ = {**os.environ, "LIBVIRT_SOCK": str(socket)}

    subprocess.run(run, env=environ, check=True, capture_output=True)
    first = env_file.read_text()
    subprocess.run(run, env=environ, check=True, capture_output=True)
    other = tmp_path / "other.env"
    subprocess.run([run[0], str(other)], env=environ, check=True, capture_output=True)

    values = dict(line.split("=", 1) for line in first.splitlines())
    assert values["VIRTDECK_SYNC_INTERVAL"] == "5"
    assert re.fullmatch(r"[0-9a-f]{48}", values["POSTGRES_PASSWORD"])
    assert values["LIBVIRT_GID"] == "4242"
    assert env_file.read_text() == first  # a second run changes nothing
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert values["POSTGRES_PASSWORD"] not in other.read_text()


def test_readme_says_what_the_compose_defaults_and_the_socket_mount_mean() -> None:
    readme = (ROOT / "README.md").read_text()
    docker = readme[readme.index("## Docker") :]
    for words in (
        "127.0.0.1:8000", "make env", "root-equivalent", "LIBVIRT_GID",
        "docker compose exec app virtdeck create-user NAME --role admin",
        "docker compose logs app", "VIRTDECK_FORWARDED_ALLOW_IPS", "gateway",
    ):  # fmt: skip
        assert words in docker


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
