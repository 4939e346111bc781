"""The guest page in sections (Overview, Console, Hardware, Snapshots, Backups, Activity, XML),
each at its own URL with the navigation marking it; the last failed action on the Overview until
an action succeeds, with what to do about the failures virtdeck knows."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import transaction
from app.models import Guest
from app.models.base import utcnow
from tests.conftest import add_host, node_uri
from tests.htmx import htmx_to
from tests.markup import Element, parse

DESK = "d1000000-0000-4000-8000-000000000001"  # running, with a screen and a serial line
SLEEPY = (
    "d1000000-0000-4000-8000-000000000002"  # suspended to memory: the test driver won't resume it
)
LABELS = {
    "overview": "Overview", "console": "Console", "hardware": "Hardware",
    "snapshots": "Snapshots", "backups": "Backups", "activity": "Activity", "xml": "XML",
}  # fmt: skip
# What only each section shows, as the ids of its panels (the XML: its heading's id); Hardware
# shows operators the edit panel, the others the inventory's devices.
PANELS = {
    "overview": ("guest-details", "guest-failure"),
    "console": ("guest-console",),
    "hardware": ("guest-edit", "guest-devices"),
    "snapshots": ("guest-snapshots",),
    "backups": ("guest-backups",),
    "activity": ("guest-activity",),
    "xml": ("guest-xml-title",),
}
MSR_FAILURE = (
    "internal error: qemu unexpectedly closed the monitor: 2026-11-29T10:00:00.000000Z "
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x2000000000000 "
    "qemu-system-x86_64: ../target/i386/kvm/kvm.c:3213: kvm_buf_set_msrs: Assertion failed."
)


@pytest.fixture
def sections_host(client: TestClient) -> dict:
    return add_host(client, "delta", node_uri("node-sections.xml"))


def url(uuid: str, section: str) -> str:
    return f"/guests/{uuid}" if section == "overview" else f"/guests/{uuid}?section={section}"


def shown_panels(page: Element) -> set[str]:
    """The sections whose panels the page shows."""
    return {key for key, ids in PANELS.items() if any(page.has(id=i) for i in ids)}


def current_link(page: Element) -> tuple[str | None, str]:
    nav = page.find("nav", aria_label="Guest sections")
    marked = [a for a in nav.find_all("a") if a.get("aria-current") == "page"]
    assert len(marked) == 1
    return marked[0].get("href"), marked[0].text


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_each_section_has_its_own_url_shows_only_itself_and_is_marked_current(
    make_client, sections_host: dict, role: str
) -> None:
    user = make_client(role=role)

    for section, label in LABELS.items():
        response = user.get(url(DESK, section))

        assert response.status_code == 200, (section, response.text)
        page = parse(response.text)
        assert current_link(page) == (url(DESK, section), label)
        assert shown_panels(page) == {section}, section
        # State and actions head every section; the guest is named, not numbered.
        assert page.find(id="guest-status").find("span", class_="badge").text == "running"
        assert page.find("h1").text == "desk-1"
        title = page.find("title").text
        assert title == (
            "desk-1 · virtdeck" if section == "overview" else f"desk-1 · {label} · virtdeck"
        )
    hardware = parse(user.get(url(DESK, "hardware")).text)
    assert hardware.has(id="guest-edit") == (role == "operator")
    assert hardware.has(id="guest-devices") == (role == "viewer")


def test_an_unknown_section_is_refused_naming_the_field(
    client: TestClient, sections_host: dict
) -> None:
    unknown = client.get(f"/guests/{DESK}?section=bogus")
    no_console = client.get(f"/guests/{SLEEPY}?section=console")
    too_long = client.get(f"/guests/{DESK}?section={'x' * 40}")

    assert unknown.status_code == 404
    assert parse(unknown.text).find("p", class_="error").text == (
        "section: no section 'bogus' (one of overview, console, hardware, snapshots, backups, "
        "activity, xml)"
    )
    assert no_console.status_code == 404
    assert "section: sleepy-1 has no console" in no_console.text
    nav = parse(client.get(f"/guests/{SLEEPY}").text).find("nav", aria_label="Guest sections")
    assert [a.text for a in nav.find_all("a")] == [
        label for key, label in LABELS.items() if key != "console"
    ]
    assert too_long.status_code == 422 and "section: " in too_long.text
    assert "Traceback" not in unknown.text + no_console.text + too_long.text


def test_the_parts_of_a_section_still_refresh_themselves(
    client: TestClient, sections_host: dict
) -> None:
    status = client.get(f"/guests/{DESK}", headers=htmx_to("guest-status"))
    activity = client.get(f"/guests/{DESK}", headers=htmx_to("guest-activity"))
    failure = client.get(f"/guests/{DESK}?section=console", headers=htmx_to("guest-failure"))

    assert status.text.lstrip().startswith('<section id="guest-status"')
    assert activity.text.lstrip().startswith('<section class="panel" id="guest-activity"')
    assert failure.text.lstrip().startswith('<div id="guest-failure"')
    assert "<nav" not in status.text + activity.text + failure.text


def test_a_failed_action_stays_on_the_overview_for_everyone_until_an_action_succeeds(
    make_client, sections_host: dict
) -> None:
    operator = make_client(role="operator")
    viewer = make_client(role="viewer")

    refused = operator.post(f"/guests/{SLEEPY}/actions/resume", headers=htmx_to("guest-status"))
    seen = parse(viewer.get(f"/guests/{SLEEPY}").text)  # a reload, by someone else
    elsewhere = parse(viewer.get(f"/guests/{SLEEPY}?section=activity").text)
    forced = operator.post(f"/guests/{SLEEPY}/actions/force_off", headers=htmx_to("guest-status"))
    after = parse(viewer.get(f"/guests/{SLEEPY}").text)

    assert refused.status_code == 409
    assert refused.headers["HX-Retarget"] == "#toasts"
    assert "sleepy-1 could not resume: libvirt says: " in refused.text
    failure = seen.find("section", class_="failure")
    assert failure.find("h2").text == "Last error"
    assert failure.find("p").find("strong").text == "sleepy-1 did not resume."
    said = failure.find("details", class_="more")
    assert said.find("summary").text == "What libvirt said: show more"
    assert said.find("span", class_="more-rest").text == (
        "this function is not supported by the connection driver: virDomainPMWakeup"
    )
    assert not elsewhere.has("section", class_="failure")
    assert forced.status_code == 200 and "badge-shutoff" in forced.text
    assert after.find(id="guest-failure").text == ""


def test_a_known_failure_says_what_to_do(client: TestClient, sections_host: dict, sessions) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(Guest)
            .where(Guest.uuid == SLEEPY)
            .values(last_error=MSR_FAILURE, last_error_action="start", last_error_at=utcnow())
        )

    failure = parse(client.get(f"/guests/{SLEEPY}").text).find("section", class_="failure")
    api = client.get(f"/api/v1/guests/{SLEEPY}").json()["last_failure"]
    others = client.get(f"/api/v1/guests/{DESK}").json()["last_failure"]

    hint = (
        "This host cannot give guests the CPU feature arch-capabilities (nested KVM on AMD): "
        "give the guest the CPU mode the host page recommends."
    )
    assert failure.find("strong").text == "sleepy-1 did not start."
    assert failure.find("p", class_="hint").text == hint
    assert {k: api[k] for k in ("action", "sentence", "hint", "said")} == {
        "action": "start", "sentence": "sleepy-1 did not start", "hint": hint, "said": MSR_FAILURE
    }  # fmt: skip
    assert others is None


def test_a_shutdown_left_unanswered_offers_to_force_it_off(
    make_client, sections_host: dict, sessions
) -> None:
    operator = make_client(role="operator")
    viewer = make_client(role="viewer")

    def asked(ago: timedelta) -> None:
        with transaction(sessions) as session:
            session.execute(
                update(Guest)
                .where(Guest.uuid == DESK)
                .values(transition="shutting down", transition_since=utcnow() - ago)
            )

    asked(timedelta(seconds=5))
    patient = parse(operator.get(f"/guests/{DESK}").text).find(id="guest-status")
    asked(timedelta(minutes=2))
    unanswered = parse(operator.get(f"/guests/{DESK}?section=xml").text).find(id="guest-status")
    watched = parse(viewer.get(f"/guests/{DESK}").text).find(id="guest-status")
    forced = operator.post(f"/guests/{DESK}/actions/force_off", headers=htmx_to("guest-status"))

    assert patient.find("span", class_="badge").text == "shutting down"
    assert not patient.has(data_hint="no-acpi")
    hint = unanswered.find("p", data_hint="no-acpi")
    assert hint.find("strong").text == "No ACPI response — force off?"
    assert "The shutdown asked 2 min ago has had no effect" in hint.text
    button = hint.find("button", data_hint_action="force_off")
    assert button.get("hx-post") == f"/guests/{DESK}/actions/force_off"
    assert watched.has(data_hint="no-acpi") and not watched.has("button", data_hint_action=True)
    assert forced.status_code == 200
    assert "badge-shutoff" in forced.text and "No ACPI response" not in forced.text
