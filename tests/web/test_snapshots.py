"""The Snapshots panel of the guest page: the tree, the form for operators, its refusals."""

import json

from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import HTMX
from tests.markup import options, parse

WEB_1 = "a1000000-0000-4000-8000-000000000001"
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off


def test_operators_take_and_delete_from_the_panel(make_client) -> None:
    admin = make_client()
    add_host(admin, "alpha", node_uri("node-alpha.xml"))
    operator = make_client(role="operator")
    viewer = make_client(role="viewer")

    taken = operator.post(f"/guests/{WEB_1}/snapshots", data={"name": "s1", "memory": "auto"})
    child = operator.post(f"/guests/{WEB_1}/snapshots", data={"name": "s2"})
    page = operator.get(f"/guests/{WEB_1}?section=snapshots").text
    seen_by_viewer = viewer.get(f"/guests/{WEB_1}?section=snapshots").text
    deleted = operator.post(f"/guests/{WEB_1}/snapshots/s2/delete")

    assert taken.status_code == 200 and 'data-snapshot="s1"' in taken.text
    assert 'data-snapshot="s2" data-depth="1" data-current="true"' in child.text
    assert 'id="snapshot-form"' in page and 'hx-confirm="Delete snapshot s1' in page
    assert 'data-snapshot="s1"' in seen_by_viewer and 'id="snapshot-form"' not in seen_by_viewer
    assert deleted.status_code == 200 and 'data-snapshot="s2"' not in deleted.text


def test_a_bad_name_shows_the_form_again_with_the_reason(client: TestClient) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))

    response = client.post(f"/guests/{WEB_1}/snapshots", data={"name": "a b", "memory": "no"})

    assert response.status_code == 422
    assert 'data-field="name"' in response.text and 'value="a b"' in response.text


def test_a_revert_that_changes_the_running_state_says_so_before_and_after(
    client: TestClient,
) -> None:
    add_host(client, "alpha", node_uri("node-alpha.xml"))
    taken = client.post(f"/guests/{DB_1}/snapshots", data={"name": "cold", "memory": "no"})
    started = client.post(f"/guests/{DB_1}/actions/start", headers=HTMX)
    warm = client.post(f"/guests/{DB_1}/snapshots", data={"name": "warm", "memory": "yes"})

    def revert_button(page: str, snapshot: str):
        return parse(page).find("tr", data_snapshot=snapshot).find("button", data_action="revert")

    page = client.get(f"/guests/{DB_1}?section=snapshots").text
    reverted = client.post(f"/guests/{DB_1}/snapshots/cold/revert", headers=HTMX)
    after = client.get(f"/guests/{DB_1}?section=snapshots").text

    assert (taken.status_code, warm.status_code) == (200, 200) and started.status_code == 204
    to_cold = revert_button(page, "cold")
    assert to_cold.get("hx-confirm") == (
        "Revert db-1 to cold? Changes since it was taken are lost, and it is running now and "
        "will be shut off (the snapshot was taken while it was off)."
    )
    assert to_cold.get("data-changes-state") == "true"
    to_warm = revert_button(page, "warm")
    assert to_warm.get("hx-confirm") == "Revert db-1 to warm? Changes since it was taken are lost."
    # One choice, as the state allows; the host's state when it is taken decides (auto).
    memory = parse(page).find("select", name="memory").find("option")
    assert (memory.get("value"), memory.text) == ("auto", "saved with the disks (the guest is on)")
    assert options(page, "memory") == ["auto"]
    assert reverted.status_code == 204
    assert (
        json.loads(reverted.headers["HX-Location"])["path"] == f"/guests/{DB_1}?section=snapshots"
    )
    assert json.loads(reverted.headers["HX-Trigger"]) == {
        "toast": {"message": "db-1 reverted to cold: it was running and is now shut off"}
    }
    assert "it is off now and will be running" in revert_button(after, "warm").get("hx-confirm")
    off = parse(after).find("select", name="memory").find("option")
    assert off.text == "not saved: the guest is off (disks only)"
