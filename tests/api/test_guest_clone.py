"""Cloning a guest through POST /api/v1/guests/{uuid}/clone on the test driver's shared
test:///default: the refusals, each naming its field with nothing made, and the job, whose failed
copy (the test driver cannot stream volumes) leaves nothing behind. The copy itself, and the
clone booting, are proven on the real libvirtd (tests/test_real_libvirtd_guest_clone.py)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import clone_guests
from tests.clone_guests import Source, make_volume
from tests.conftest import add_host, node_uri
from tests.polling import finished_job
from tests.storage import DEFAULT_POOL, domain_names, volume_names

ALPHA_1 = "a1000000-0000-4000-8000-000000000001"  # its disk is in no storage pool

clone_source = clone_guests.clone_source  # the fixture


def clone(client: TestClient, uuid: str, **body) -> Any:
    return client.post(f"/api/v1/guests/{uuid}/clone", json=body)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "two words", "pool": DEFAULT_POOL}, 422, "name"),
        ({"name": "{prefix}-src", "pool": DEFAULT_POOL}, 409, "name"),  # the source's own
        ({"name": "{prefix}-copy", "pool": "no-such-pool"}, 422, "pool"),
        ({"name": "{prefix}-copy", "pool": ""}, 422, "pool"),
        ({"name": "{prefix}-taken", "pool": DEFAULT_POOL}, 409, "name"),  # its volume exists
    ],
)
def test_a_refused_clone_names_the_field_and_makes_nothing(
    client: TestClient, clone_source: Source, body: dict, status: int, field: str
) -> None:
    prefix, uuid = clone_source.prefix, clone_source.guest["uuid"]
    make_volume(clone_source.lv, f"{prefix}-taken-vda.qcow2")
    body = {key: value.format(prefix=prefix) for key, value in body.items()}

    refused = clone(client, uuid, **body)

    assert refused.status_code == status, refused.text
    assert refused.json()["field"] == field
    assert refused.json()["detail"].startswith(f"{field}: ")
    assert client.get(f"/api/v1/guests/{uuid}").json()["busy_action"] is None
    assert domain_names(clone_source.lv) & {f"{prefix}-copy", f"{prefix}-taken"} == set()


def test_a_pool_that_cannot_hold_new_volumes_is_refused(
    client: TestClient, clone_source: Source
) -> None:
    prefix = clone_source.prefix
    xml = f"<pool type='logical'><name>{prefix}-lvm</name><target><path>/dev/{prefix}</path>"
    lvm = clone_source.lv.storagePoolCreateXML(xml + "</target></pool>", 0)
    try:
        refused = clone(
            client, clone_source.guest["uuid"], name=f"{prefix}-copy", pool=f"{prefix}-lvm"
        )
    finally:
        lvm.destroy()

    assert refused.status_code == 422 and refused.json()["field"] == "pool", refused.text
    assert "need a directory pool" in refused.json()["detail"]


def test_a_clone_runs_as_a_job_and_a_failed_copy_leaves_nothing_behind(
    client: TestClient, clone_source: Source
) -> None:
    prefix, uuid = clone_source.prefix, clone_source.guest["uuid"]

    started = clone(client, uuid, name=f"{prefix}-copy", pool=DEFAULT_POOL)

    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["kind"], job["guest_uuid"]) == ("guest.clone", uuid)
    done = finished_job(client, job["id"])
    # The test driver has no volume streams: the copy fails once its volume is made.
    assert done["status"] == "failed" and "not supported" in done["error"], done
    assert f"{prefix}-copy-vda.qcow2" not in volume_names(clone_source.lv)
    assert f"{prefix}-copy" not in domain_names(clone_source.lv)
    assert client.get(f"/api/v1/guests/{uuid}").json()["busy_action"] is None


def test_a_guest_whose_disk_is_in_no_pool_cannot_be_cloned(client: TestClient) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))

    refused = clone(client, ALPHA_1, name="web-1-copy", pool="default")

    assert refused.status_code == 409 and refused.json()["field"] == "disks", refused.text
    assert "not a volume of an active storage pool" in refused.json()["detail"]
    assert client.get(f"/api/v1/guests/{ALPHA_1}").json()["busy_action"] is None


def test_a_viewer_may_not_clone(make_client, clone_source: Source) -> None:
    viewer = make_client(role="viewer")
    name = f"{clone_source.prefix}-copy"

    refused = clone(viewer, clone_source.guest["uuid"], name=name, pool=DEFAULT_POOL)

    assert refused.status_code == 403


def test_the_clone_route_is_in_the_openapi_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    operation = schema["paths"]["/api/v1/guests/{uuid}/clone"]["post"]
    assert set(operation["responses"]) >= {"202", "409", "422"}
    assert set(schema["components"]["schemas"]["CloneIn"]["properties"]) == {"name", "pool"}
