"""One action for many guests (API and the Guests page): each guest's own checks, a result
each, one guest's refusal never stopping the others."""

from fastapi.testclient import TestClient

from tests.htmx import htmx_to, toast
from tests.markup import parse
from tests.shared_host import Shared, shared  # noqa: F401  (the fixture)

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # on alpha, running
DB_1 = "a1000000-0000-4000-8000-000000000003"  # on alpha, shut off
UNKNOWN = "a1000000-0000-4000-8000-00000000ffff"


def bulk(client: TestClient, action: str, uuids: list[str]):
    return client.post("/api/v1/guests/bulk", json={"action": action, "uuids": uuids})


def test_twenty_guests_start_in_one_bulk_action_each_with_its_result(
    client: TestClient,
    shared: Shared,  # noqa: F811
) -> None:
    guests = shared.make_guests(client, 20)
    uuids = [g["uuid"] for g in guests]
    assert {g["status"] for g in guests} == {"shutoff"}

    started = bulk(client, "start", uuids)

    assert started.status_code == 200, started.text
    results = started.json()["results"]
    assert [r["uuid"] for r in results] == uuids  # in the order asked
    assert [r["name"] for r in results] == [g["name"] for g in guests]
    assert {(r["outcome"], r["message"]) for r in results} == {("ok", "now running")}
    assert started.json()["summary"] == "Start: 20 ok"
    listed = client.get("/api/v1/guests", params={"q": shared.prefix}).json()
    assert listed["total"] == 20
    assert {g["status"] for g in listed["items"]} == {"running"}
    running = {shared.lv.lookupByUUIDString(u).isActive() for u in uuids}
    assert running == {True}  # libvirt's word, not only the inventory's
    activity = client.get("/api/v1/audit", params={"action": "guest.start"}).json()["items"]
    assert {e["target"].split(" ")[0] for e in activity} >= {f"guest:{u}" for u in uuids}


def test_a_mixed_selection_refuses_some_and_still_acts_on_the_rest(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    everyone = [g["uuid"] for g in client.get("/api/v1/guests").json()["items"]]
    was = {g["uuid"]: g["status"] for g in client.get("/api/v1/guests").json()["items"]}

    started = bulk(client, "start", [*everyone, UNKNOWN])

    assert started.status_code == 200, started.text
    by_uuid = {r["uuid"]: r for r in started.json()["results"]}
    assert by_uuid[WEB_1]["outcome"] == "refused"
    assert by_uuid[WEB_1]["message"] == "cannot start web-1: it is running"
    assert by_uuid[DB_1] == {"uuid": DB_1, "name": "db-1", "outcome": "ok",
                             "message": "now running"}  # fmt: skip
    assert by_uuid[UNKNOWN]["outcome"] == "refused"
    assert by_uuid[UNKNOWN]["message"] == f"guest {UNKNOWN} not found"
    assert {"shutoff", "running", "paused"} <= set(was.values())
    for uuid, status in was.items():  # the shut-off ones started; the others are as they were
        outcome = by_uuid[uuid]["outcome"]
        assert outcome == ("ok" if status == "shutoff" else "refused"), by_uuid[uuid]
        now = client.get(f"/api/v1/guests/{uuid}").json()["status"]
        assert now == ("running" if status == "shutoff" else status)
    assert started.json()["summary"].startswith("Start: ")


def test_the_guests_page_shows_a_result_a_guest_and_a_toast(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    answer = client.post(
        "/guests/bulk", data={"action": "force_off", "uuid": [WEB_1, DB_1]},
        headers=htmx_to("bulk-results"),
    )  # fmt: skip

    assert answer.status_code == 200, answer.text
    table = parse(answer.text)
    rows = {
        row.get("data-guest"): [cell.text.strip() for cell in row.find_all("td")]
        for row in table.find_all("tr", data_guest=True)
    }
    assert rows == {
        WEB_1: ["web-1", "ok", "now shut off"],
        DB_1: ["db-1", "refused", "cannot force off db-1: it is shut off"],
    }
    assert table.find("h2").text == "Force off: 1 ok, 1 refused"
    assert toast(answer) == "Force off: 1 ok, 1 refused"
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["status"] == "shutoff"


def test_a_bulk_backup_gives_each_guest_its_own_refusal(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    answer = bulk(client, "backup", [WEB_1, DB_1])

    assert [r["outcome"] for r in answer.json()["results"]] == ["refused", "refused"]
    assert all(
        "not a volume of an active storage pool" in r["message"] for r in answer.json()["results"]
    )
    assert client.get(f"/api/v1/guests/{WEB_1}").json()["busy_action"] is None


def test_a_bad_action_or_no_guest_is_refused_naming_the_field(
    client: TestClient, two_hosts: tuple[dict, dict]
) -> None:
    api_action = bulk(client, "reboot", [WEB_1])
    none = bulk(client, "start", [])
    page_none = client.post(
        "/guests/bulk", data={"action": "start"}, headers=htmx_to("bulk-results")
    )
    page_action = client.post(
        "/guests/bulk", data={"action": "delete", "uuid": [WEB_1]}, headers=htmx_to("bulk-results")
    )
    page_long = client.post(
        "/guests/bulk",
        data={"action": "start", "uuid": [WEB_1 + "0"]},
        headers=htmx_to("bulk-results"),
    )

    assert api_action.status_code == 422 and "action" in api_action.text
    assert none.status_code == 422 and "uuids" in none.text
    assert page_none.status_code == 422
    assert "uuids: choose at least one guest" in page_none.text
    assert page_action.status_code == 422
    assert "action: must be one of start, shutdown, force_off, backup" in page_action.text
    assert page_long.status_code == 422
    assert "uuids: a guest&#39;s UUID has 36 characters" in page_long.text
