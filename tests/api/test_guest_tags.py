"""Guest tags: set through the API or the guest page, kept in the domain XML's metadata (so a
sync reads them back, and one written there by another tool shows up), shown and filtered on on
the Guests page and the API; bad ones refused naming the field."""

from fastapi.testclient import TestClient

from app.virt.domain_xml import TAGS_NAMESPACE
from app.virt.tags import CONFIG, ELEMENT
from tests.htmx import htmx_to, toast
from tests.markup import parse
from tests.polling import until
from tests.shared_host import Shared, shared  # noqa: F401  (the fixture)

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # on alpha


def put_tags(client: TestClient, uuid: str, tags: list[str]):
    return client.put(f"/api/v1/guests/{uuid}/tags", json={"tags": tags})


def refresh(client: TestClient, host: dict) -> None:
    synced = client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    assert synced.status_code == 200, synced.text


def tagged(client: TestClient, tag: str) -> list[str]:
    """The names of the guests the API lists with this tag."""
    return [g["name"] for g in client.get("/api/v1/guests", params={"tag": tag}).json()["items"]]


def test_tags_set_are_shown_filtered_and_kept_in_the_domain_metadata(
    client: TestClient,
    shared: Shared,  # noqa: F811
) -> None:
    one, two, three = shared.make_guests(client, 3)

    first = put_tags(client, one["uuid"], ["Prod", "db", "team:data", "db"])
    put_tags(client, two["uuid"], ["prod"])

    assert first.status_code == 200, first.text
    assert first.json()["tags"] == ["db", "prod", "team:data"]  # lower case, sorted, once
    metadata = shared.lv.lookupByUUIDString(one["uuid"]).metadata(ELEMENT, TAGS_NAMESPACE, 0)
    assert "<tag>prod</tag>" in metadata and "<tag>team:data</tag>" in metadata
    assert sorted(tagged(client, "prod")) == [one["name"], two["name"]]
    assert tagged(client, "PROD") == tagged(client, "prod")
    assert tagged(client, "team:data") == [one["name"]]
    assert tagged(client, "team") == []  # a whole tag, not part of one
    page = client.get("/guests", params={"tag": "db"})
    rows = parse(page.text).find_all("tr", data_uuid=True)
    assert [row.get("data-uuid") for row in rows] == [one["uuid"]]
    assert [a.text for a in rows[0].find_all("a", class_="tag")] == ["db", "prod", "team:data"]
    assert parse(page.text).find("input", name="tag").get("value") == "db"

    refresh(client, shared.host)
    put_tags(client, two["uuid"], [])  # none: the element goes

    assert client.get(f"/api/v1/guests/{one['uuid']}").json()["tags"] == [
        "db", "prod", "team:data"
    ]  # fmt: skip
    assert client.get(f"/api/v1/guests/{two['uuid']}").json()["tags"] == []
    assert (
        "virtdeck.dev/xmlns/tags"
        not in client.get(f"/api/v1/guests/{two['uuid']}").json()["domain_xml"]
    )
    assert tagged(client, "prod") == [one["name"]]
    assert three["uuid"] not in str(client.get("/api/v1/guests", params={"tag": "db"}).json())


def test_a_tag_written_into_the_metadata_by_another_tool_shows_up(
    client: TestClient,
    shared: Shared,  # noqa: F811
) -> None:
    one, two = shared.make_guests(client, 2)

    def write(uuid: str, xml: str) -> None:
        """Tags written by libvirt directly (another tool, a restored definition)."""
        dom = shared.lv.lookupByUUIDString(uuid)
        dom.setMetadata(ELEMENT, xml, "other", TAGS_NAMESPACE, CONFIG)

    write(one["uuid"], "<tags><tag>Restored</tag><tag>not a tag!</tag><tag>web</tag></tags>")
    # Its metadata-change event has the worker read it again, without a sync asked for.
    until(lambda: tagged(client, "restored"), timeout=10, what="the event's re-read")
    # With no events, the next sync reads it.
    client.app.state.sync.call(shared.host["id"], lambda conn: conn.unwatch())
    write(two["uuid"], "<tags><tag>later</tag></tags>")
    refresh(client, shared.host)

    assert client.get(f"/api/v1/guests/{one['uuid']}").json()["tags"] == ["restored", "web"]
    assert tagged(client, "restored") == [one["name"]]
    assert client.get(f"/api/v1/guests/{two['uuid']}").json()["tags"] == ["later"]


def test_bad_tags_are_refused_naming_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    spaced = put_tags(client, WEB_1, ["two words"])
    too_many = put_tags(client, WEB_1, [f"t{i}" for i in range(17)])
    too_long = put_tags(client, WEB_1, ["x" * 33])
    bad_filter = client.get("/api/v1/guests", params={"tag": "a b"})
    page_filter = client.get("/guests", params={"tag": "%"})

    assert (spaced.status_code, spaced.json()["field"]) == (422, "tags")
    assert spaced.json()["detail"] == (
        "tags: 'two words' is not a tag: use 1 to 32 letters, digits or - _ . :"
    )
    assert too_many.json()["detail"] == "tags: at most 16 tags a guest, not 17"
    assert too_long.status_code == 422 and too_long.json()["field"] == "tags"
    assert (bad_filter.status_code, bad_filter.json()["field"]) == (422, "tag")
    assert page_filter.status_code == 422 and "tag: a tag is 1 to 32 letters" in page_filter.text
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["tags"] == []


def test_the_guest_page_edits_tags_and_shows_a_refusal_next_to_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    page = client.get(f"/guests/{WEB_1}")
    saved = client.post(
        f"/guests/{WEB_1}/tags", data={"tags": "web, frontend"}, headers=htmx_to("guest-tags")
    )
    refused = client.post(
        f"/guests/{WEB_1}/tags", data={"tags": "ok bad/tag"}, headers=htmx_to("guest-tags")
    )

    assert parse(page.text).find("section", id="guest-tags").has("input", name="tags")
    assert saved.status_code == 200
    assert [a.text for a in parse(saved.text).find_all("a", class_="tag")] == ["frontend", "web"]
    assert toast(saved) == "web-1: tags saved"
    assert refused.status_code == 422
    error = parse(refused.text).find("span", data_field="tags")
    assert error.text == "'bad/tag' is not a tag: use 1 to 32 letters, digits or - _ . :"
    assert parse(refused.text).find("input", name="tags").get("value") == "ok bad/tag"
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["tags"] == ["frontend", "web"]
    activity = client.get("/api/v1/audit", params={"action": "guest.tags"}).json()["items"]
    assert [e["result"] for e in activity[:2]] == ["failed", "ok"]
