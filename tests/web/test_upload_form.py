"""The host page's upload section, on a test-driver host: operators get it, viewers do not; it
offers the active pools with their free space; and an upload the host cannot take (the test
driver streams no volumes) leaves no volume behind."""

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import HTMX
from tests.markup import parse


def test_operators_get_the_upload_section_and_viewers_do_not(
    client: TestClient, make_client: Callable[..., TestClient]
) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    operator, viewer = make_client(role="operator"), make_client(role="viewer")

    assert parse(operator.get(f"/hosts/{host['id']}").text).has(id="upload")
    assert not parse(viewer.get(f"/hosts/{host['id']}").text).has(id="upload")
    assert viewer.get(f"/hosts/{host['id']}/upload", headers=HTMX).status_code == 403


def test_the_form_offers_the_active_pools_with_their_free_space(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    pools = client.get(f"/api/v1/hosts/{host['id']}/pools").json()

    form = parse(client.get(f"/hosts/{host['id']}/upload", headers=HTMX).text)

    options = form.find("select", name="pool").find_all("option")
    assert [(o.get("value"), o.get("data-free")) for o in options] == [
        (p["name"], str(p["available"])) for p in pools if p["active"]
    ]
    assert form.find("form").get("data-host") == str(host["id"])
    assert [o.get("value") for o in form.find("select", name="format").find_all("option")] == [
        "iso", "raw", "qcow2",
    ]  # fmt: skip


def test_an_upload_the_host_cannot_stream_leaves_no_volume(client: TestClient) -> None:
    host = add_host(client, "storage", node_uri("node-storage.xml"))
    volumes = f"/api/v1/hosts/{host['id']}/pools/images/volumes"
    before = [v["name"] for v in client.get(volumes).json()]

    refused = client.put(f"{volumes}/new.img", params={"format": "raw"}, content=b"x" * 4096)

    assert refused.status_code == 400
    assert "not supported" in refused.json()["detail"]
    assert [v["name"] for v in client.get(volumes).json()] == before
