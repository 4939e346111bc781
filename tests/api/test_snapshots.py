"""Snapshots on the test driver: take, the tree, revert, delete, refusals, and the sync."""

import time

from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off


def take(client: TestClient, uuid: str, name: str, **body):
    """POST a snapshot of the guest."""
    return client.post(f"/api/v1/guests/{uuid}/snapshots", json={"name": name, **body})


def tree(client: TestClient, uuid: str) -> list[tuple[str, str | None, int, bool]]:
    """(name, parent, depth, is_current) of each snapshot, in tree order."""
    response = client.get(f"/api/v1/guests/{uuid}/snapshots")
    assert response.status_code == 200, response.text
    return [(s["name"], s["parent"], s["depth"], s["is_current"]) for s in response.json()["items"]]


def test_take_list_revert_and_delete_make_a_tree(client: TestClient, two_hosts) -> None:
    first = take(client, WEB_1, "base", description="clean install")
    take(client, WEB_1, "child")
    reverted = client.post(f"/api/v1/guests/{WEB_1}/snapshots/base/revert")
    take(client, WEB_1, "other")
    before_delete = tree(client, WEB_1)
    deleted = client.delete(f"/api/v1/guests/{WEB_1}/snapshots/base")

    assert first.status_code == 201, first.text
    assert first.json()["description"] == "clean install"
    assert first.json()["memory"] is True and first.json()["state"] == "running"
    assert first.json()["external"] is False
    assert reverted.status_code == 200 and reverted.json()["status"] == "running"
    assert before_delete == [
        ("base", None, 0, False), ("child", "base", 1, False), ("other", "base", 1, True),
    ]  # fmt: skip
    assert deleted.status_code == 204
    assert tree(client, WEB_1) == [("child", None, 0, False), ("other", None, 0, True)]


def test_a_shut_off_guest_is_snapshotted_without_memory(client: TestClient, two_hosts) -> None:
    taken = take(client, DB_1, "cold")
    with_memory = take(client, DB_1, "warm", memory=True)

    assert taken.status_code == 201
    assert (taken.json()["state"], taken.json()["memory"]) == ("shutoff", False)
    assert with_memory.status_code == 422
    assert with_memory.json()["detail"].startswith("memory: ")


def test_bad_input_is_refused_naming_the_field(client: TestClient, two_hosts) -> None:
    bad_name = take(client, WEB_1, "no spaces")
    empty = take(client, WEB_1, "")
    long_description = take(client, WEB_1, "ok", description="x" * 1001)
    take(client, WEB_1, "twice")
    duplicate = take(client, WEB_1, "twice")
    # A name that no snapshot can have matches no route at all.
    bad_revert = client.post(f"/api/v1/guests/{WEB_1}/snapshots/-x/revert")

    for response in (bad_name, empty):
        assert response.status_code == 422
        assert response.json()["detail"].startswith("name: ")
    assert bad_revert.status_code == 404
    assert long_description.status_code == 422
    assert long_description.json()["detail"].startswith("description: ")
    assert duplicate.status_code == 409 and duplicate.json()["detail"].startswith("name: ")
    assert [name for name, *_ in tree(client, WEB_1)] == ["twice"]


def test_unknown_guests_and_snapshots_are_404(client: TestClient, two_hosts) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    responses = [
        client.get(f"/api/v1/guests/{unknown}/snapshots"),
        take(client, unknown, "a"),
        client.post(f"/api/v1/guests/{WEB_1}/snapshots/nope/revert"),
        client.delete(f"/api/v1/guests/{WEB_1}/snapshots/nope"),
    ]

    assert [r.status_code for r in responses] == [404] * 4
    assert "no snapshot named nope" in responses[2].json()["detail"]


def test_snapshot_actions_show_in_the_guest_activity(client: TestClient, two_hosts) -> None:
    take(client, WEB_1, "audited")
    client.post(f"/api/v1/guests/{WEB_1}/snapshots/audited/revert")
    client.delete(f"/api/v1/guests/{WEB_1}/snapshots/audited")

    page = client.get(f"/guests/{WEB_1}", params={"section": "activity"}).text

    for action in ("snapshot.create", "snapshot.revert", "snapshot.delete"):
        assert f'data-action="{action}"' in page


def test_snapshots_made_outside_virtdeck_show_at_a_pass_if_their_guest_changed_else_at_a_reconcile(
    make_client,
) -> None:
    client = make_client(sync_interval=0.1)
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    sync = client.app.state.sync
    xml = "<domainsnapshot><name>outside</name></domainsnapshot>"
    sync.call(host["id"], lambda conn: conn.domain(DB_1).snapshotCreateXML(xml, 0))
    sync.call(host["id"], lambda conn: conn.domain(WEB_1).snapshotCreateXML(xml, 0))
    sync.call(host["id"], lambda conn: conn.act(WEB_1, "suspend"))  # a changed guest

    deadline = time.monotonic() + 5
    while tree(client, WEB_1) != [("outside", None, 0, True)]:
        assert time.monotonic() < deadline, "no pass read the changed guest's snapshots"
        time.sleep(0.05)
    unchanged = tree(client, DB_1)
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})  # a reconcile

    assert unchanged == []  # libvirt has no snapshot events: unchanged guests wait for it
    assert tree(client, DB_1) == [("outside", None, 0, True)]


UEFI_XML = """<domain type='test'><name>uefi-1</name><uuid>{uuid}</uuid><memory>65536</memory>
<os firmware='efi'><type>hvm</type></os></domain>"""


def test_a_uefi_guest_is_refused_in_plain_words(client: TestClient) -> None:
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    uuid = "a1000000-0000-4000-8000-0000000000ef"
    xml = UEFI_XML.format(uuid=uuid)
    client.app.state.sync.call(host["id"], lambda conn: conn.lv.defineXML(xml))
    client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})

    response = take(client, uuid, "nope")

    assert response.status_code == 409
    assert "cannot take internal snapshots of a UEFI guest" in response.json()["detail"]
