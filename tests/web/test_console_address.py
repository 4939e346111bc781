"""How a host's guests' screens are reached, as its page says, and the console address an admin
sets for a qemu+tcp/tls host (libvirt has no tunnel there): by the API and by the host page's
form, with a refusal that names the field."""

from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.htmx import HTMX, toast
from tests.markup import parse

TCP_URI = "qemu+tcp://127.0.0.1/system"  # nothing listens: the host stays unreachable


def register(client: TestClient, uri: str, **fields) -> dict:
    created = client.post("/api/v1/hosts", json={"name": "lab", "uri": uri, **fields})
    assert created.status_code == 201, created.text
    return created.json()


def screens_fact(client: TestClient, host_id: int) -> str:
    return parse(client.get(f"/hosts/{host_id}").text).definition("Screens of guests").text


def test_a_local_host_says_it_hands_screens_over_and_asks_for_no_address(
    client: TestClient,
) -> None:
    host = add_host(client, "local-test", "test:///default")
    page = parse(client.get(f"/hosts/{host['id']}").text)

    assert page.definition("Screens of guests").text.startswith(
        "handed over by the local libvirtd (no TCP port)"
    )
    assert not page.has(id="console-address")


def test_the_api_sets_and_clears_a_console_address_and_refuses_a_bad_one(
    client: TestClient,
) -> None:
    host = register(client, TCP_URI, console_address="10.0.0.5")
    cleared = client.patch(f"/api/v1/hosts/{host['id']}", json={"console_address": ""})
    refused = client.patch(f"/api/v1/hosts/{host['id']}", json={"console_address": "-oProxy=x"})

    assert host["console_address"] == "10.0.0.5"
    assert cleared.status_code == 200 and cleared.json()["console_address"] is None
    assert refused.status_code == 422 and refused.json()["field"] == "console_address"
    assert client.get(f"/api/v1/hosts/{host['id']}").json()["console_address"] is None


def test_an_admin_sets_a_tcp_hosts_console_address_on_its_page(client: TestClient) -> None:
    host = register(client, TCP_URI)
    before = screens_fact(client, host["id"])
    form = parse(client.get(f"/hosts/{host['id']}").text).find(id="console-address")

    refused = client.post(
        f"/hosts/{host['id']}/console-address", data={"console_address": "a b"}, headers=HTMX
    )
    saved = client.post(
        f"/hosts/{host['id']}/console-address", data={"console_address": "10.0.0.5"}, headers=HTMX
    )

    assert before.startswith("none: libvirt has no screen tunnel over tcp; set a console address")
    assert form.find("input", name="console_address").get("value") == ""
    assert refused.status_code == 422
    error = parse(refused.text).find(id="console-address-error").text
    assert error.startswith("console_address: 'a b' is not a host name or IP address")
    assert saved.status_code == 200 and toast(saved) == "lab: console address saved"
    assert screens_fact(client, host["id"]).startswith("by TCP to the console address 10.0.0.5")
