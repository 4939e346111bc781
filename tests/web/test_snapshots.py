"""The Snapshots panel of the guest page: the tree, the form for operators, its refusals."""

from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri

WEB_1 = "a1000000-0000-4000-8000-000000000001"


def test_operators_take_and_delete_from_the_panel(make_client) -> None:
    admin = make_client()
    add_host(admin, "alpha", node_uri("node-alpha.xml"))
    operator = make_client(role="operator")
    viewer = make_client(role="viewer")

    taken = operator.post(f"/guests/{WEB_1}/snapshots", data={"name": "s1", "memory": "auto"})
    child = operator.post(f"/guests/{WEB_1}/snapshots", data={"name": "s2"})
    page = operator.get(f"/guests/{WEB_1}").text
    seen_by_viewer = viewer.get(f"/guests/{WEB_1}").text
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
