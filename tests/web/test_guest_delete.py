"""The guest page's "Delete guest" panel: the disks listed, the typed-name check, the redirect."""

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.htmx import HTMX, toast
from tests.nodes import LONE, OWNER, POOL, storage_node

WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running, on alpha
DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off, on alpha


def post_delete(client: TestClient, uuid: str, headers: dict = HTMX, **form: str):
    """Post the delete form (as htmx unless told otherwise)."""
    return client.post(f"/guests/{uuid}/delete", data=form, headers=headers, follow_redirects=False)


def test_admins_see_the_panel_and_operators_do_not(make_client, two_hosts) -> None:
    admin = make_client(role="admin")
    operator = make_client(role="operator")

    admin_page = admin.get(f"/guests/{DB_1}?section=hardware").text
    operator_page = operator.get(f"/guests/{DB_1}?section=hardware").text

    assert 'id="guest-delete"' in admin_page
    assert f'hx-get="/guests/{DB_1}/delete"' in admin_page
    assert 'id="guest-delete"' not in operator_page
    assert operator.get(f"/guests/{DB_1}/delete").status_code == 403


def test_the_panel_lists_what_would_be_deleted_and_what_kept(make_client, tmp_path: Path) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    add_host(client, "storage", storage_node(tmp_path))

    panel = client.get(f"/guests/{OWNER}/delete", headers=HTMX).text

    assert "<html" not in panel and 'id="guest-delete"' in panel
    assert f'<tr data-disk="remove"><td><code>{POOL}/own.qcow2</code></td>' in panel
    assert "kept: also used by guest sharer" in panel
    assert "kept: cdrom media are never removed" in panel
    assert 'name="force"' in panel and "(it is running)" in panel
    assert 'data-confirm-name="owner"' in panel and "disabled>Delete guest</button>" in panel


def test_a_wrong_name_is_422_on_the_field_and_deletes_nothing(
    client: TestClient, two_hosts
) -> None:
    response = post_delete(client, DB_1, confirm="db-2", remove_storage="true")

    assert response.status_code == 422
    assert 'data-field="confirm"' in response.text
    assert "type the guest&#39;s name, db-1, to delete it" in response.text
    assert 'value="db-2"' in response.text and "checked" in response.text
    assert response.text.lstrip().startswith('<form id="guest-delete-form"')
    assert client.get(f"/api/v1/guests/{DB_1}").json()["status"] == "shutoff"


def test_the_right_name_deletes_and_goes_to_the_host_page_with_a_toast(
    make_client, tmp_path: Path
) -> None:
    client = make_client(test_driver_dir=str(tmp_path))
    host = add_host(client, "storage", storage_node(tmp_path))

    response = post_delete(client, LONE, confirm="lone", remove_storage="true")

    assert response.status_code == 204
    location = json.loads(response.headers["HX-Location"])
    assert location == {
        "path": f"/hosts/{host['id']}",
        "target": "main",
        "select": "main",
        "swap": "outerHTML",
    }
    assert toast(response) == "lone deleted; removed 1 disk(s)"
    assert client.get(f"/api/v1/guests/{LONE}").json()["status"] == "gone"


def test_a_plain_form_post_is_redirected_to_the_host_page(client: TestClient, two_hosts) -> None:
    response = post_delete(client, DB_1, headers={}, confirm="db-1")

    assert response.status_code == 303
    assert response.headers["location"] == f"/hosts/{two_hosts[0]['id']}"


def test_a_running_guest_without_force_is_a_409_toast(client: TestClient, two_hosts) -> None:
    refused = post_delete(client, WEB_1, confirm="web-1")
    forced = post_delete(client, WEB_1, confirm="web-1", force="true")

    assert refused.status_code == 409
    assert refused.headers["HX-Retarget"] == "#toasts"
    assert "cannot delete web-1: it is running" in refused.text
    assert forced.status_code == 204
