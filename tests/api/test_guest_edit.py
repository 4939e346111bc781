"""Editing a guest through the API, on test-driver hosts: what a running guest takes live and
what waits for its next start, refusals that name the field, the overcommit policy for growing
a running guest, and who may."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host, make_user, node_uri

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha: 2 vCPUs, 2048 MiB max
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off on alpha


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


def edit(client: TestClient, uuid: str, **body):
    return client.patch(f"/api/v1/guests/{uuid}/settings", json=body)


def settings(client: TestClient, uuid: str) -> dict:
    response = client.get(f"/api/v1/guests/{uuid}/settings")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_running_guest_takes_vcpus_live_and_a_new_maximum_at_its_next_start(
    client: TestClient, alpha
) -> None:
    before = settings(client, WEB_1)
    fewer = edit(client, WEB_1, vcpus=1)
    bigger = edit(client, WEB_1, vcpus_max=4)
    after = settings(client, WEB_1)

    assert (before["vcpus"], before["vcpus_max"], before["running"]) == (2, 2, True)
    assert fewer.status_code == 200, fewer.text
    assert (fewer.json()["live"], fewer.json()["next_start"]) == (["vcpus"], [])
    assert fewer.json()["guest"]["vcpus"] == 1  # the inventory follows at once
    assert (bigger.json()["live"], bigger.json()["next_start"]) == ([], ["vcpus_max"])
    assert (after["vcpus"], after["vcpus_max"], after["live_vcpus_max"]) == (1, 4, 2)


def test_a_shut_off_guest_saves_every_change_and_its_description_and_autostart(
    client: TestClient, alpha
) -> None:
    done = edit(
        client, DB_1, vcpus_max=4, vcpus=3, memory_max_mib=4096, memory_mib=3072,
        autostart=True, description="the database",
    )  # fmt: skip
    now = settings(client, DB_1)

    assert done.status_code == 200, done.text
    assert (done.json()["live"], done.json()["next_start"]) == ([], [])
    assert (now["vcpus"], now["vcpus_max"]) == (3, 4)
    assert (now["memory_mib"], now["memory_max_mib"]) == (3072, 4096)
    assert (now["autostart"], now["description"]) == (True, "the database")
    assert done.json()["guest"]["autostart"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vcpus": 3}, "vcpus"),  # over the maximum of 2
        ({"vcpus_max": 9}, "vcpus_max"),  # alpha has 8 CPUs
        ({"vcpus_max": 1}, "vcpus_max"),  # below the 2 it has, without lowering vcpus
        ({"memory_mib": 4096}, "memory_mib"),  # over the maximum of 2048
        ({"memory_max_mib": 8}, "memory_max_mib"),
        ({"memory_max_mib": 1024}, "memory_max_mib"),  # below the 1536 it has
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_field_and_nothing_changes(
    client: TestClient, alpha, body: dict, field: str
) -> None:
    before = settings(client, WEB_1)
    refused = edit(client, WEB_1, **body)

    assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    assert settings(client, WEB_1) == before


def test_growing_a_running_guest_over_the_policy_is_refused_unless_an_admin_forces_it(
    client: TestClient, alpha, database_url: str
) -> None:
    # The same app for both: a test-driver node file is private to each app's connection.
    operator = {"Authorization": f"Bearer {make_user(database_url, 'op', 'operator')}"}
    assert edit(client, WEB_1, vcpus=1).status_code == 200
    running = client.get(f"/api/v1/hosts/{alpha['id']}/overcommit").json()["cpu_running"]
    # Exactly full: one more running vCPU is over the policy.
    policy = {"cpu": running["allocated"] / running["capacity"], "memory": None}
    tight = client.put(f"/api/v1/hosts/{alpha['id']}/policy", json=policy)
    assert tight.status_code == 200, tight.text
    path = f"/api/v1/guests/{WEB_1}/settings"

    over = client.patch(path, json={"vcpus": 2}, headers=operator)
    forced_by_operator = client.patch(path, json={"vcpus": 2, "force": True}, headers=operator)
    forced = edit(client, WEB_1, vcpus=2, force=True)

    assert over.status_code == 409, over.text
    assert over.json()["detail"].startswith("vcpus: this edit would put 4 vCPUs on 8 CPUs")
    assert forced_by_operator.status_code == 403
    assert forced.status_code == 200 and forced.json()["live"] == ["vcpus"]


def test_a_viewer_reads_the_settings_but_may_not_edit(
    make_client: Callable[..., TestClient], alpha
) -> None:
    viewer = make_client(role="viewer")

    assert viewer.get(f"/api/v1/guests/{WEB_1}/settings").status_code == 200
    assert edit(viewer, WEB_1, vcpus=1).status_code == 403


def test_a_shut_off_guest_is_renamed_and_the_inventory_follows(client: TestClient, alpha) -> None:
    renamed = client.post(f"/api/v1/guests/{DB_1}/rename", json={"name": "db-primary"})

    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "db-primary"
    assert client.get(f"/api/v1/guests/{DB_1}").json()["name"] == "db-primary"


@pytest.mark.parametrize(
    ("uuid", "name", "status"),
    [
        (WEB_1, "web-one", 409),  # running
        (DB_1, "web-2", 409),  # taken on alpha
        (DB_1, "-db", 422),  # against the naming rule
    ],
)
def test_a_rename_that_cannot_be_is_refused_naming_the_field(
    client: TestClient, alpha, uuid: str, name: str, status: int
) -> None:
    before = client.get(f"/api/v1/guests/{uuid}").json()["name"]
    refused = client.post(f"/api/v1/guests/{uuid}/rename", json={"name": name})

    assert refused.status_code == status and refused.json()["field"] == "name", refused.text
    assert client.get(f"/api/v1/guests/{uuid}").json()["name"] == before
