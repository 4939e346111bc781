"""A start button over the overcommit policy: an error toast with the numbers; admins may force."""

from fastapi.testclient import TestClient

from tests.conftest import add_host, node_uri
from tests.htmx import htmx_to

SPARE_1 = "c1000000-0000-4000-8000-000000000004"  # off on node-gamma; starting it goes over
HEADERS = htmx_to(f"guest-row-{SPARE_1}")


def test_a_start_over_the_policy_is_a_toast_and_force_is_for_admins(
    client: TestClient, make_client
) -> None:
    gamma = add_host(client, "gamma", node_uri("node-gamma.xml"))
    operator = make_client(role="operator")
    assert operator.post(f"/api/v1/hosts/{gamma['id']}/refresh", params={"wait": 15}).is_success
    path = f"/guests/{SPARE_1}/actions/start"

    refused = operator.post(path, headers=HEADERS)
    operator_forced = operator.post(path, params={"force": "true"}, headers=HEADERS)
    forced = client.post(path, params={"force": "true"}, headers=HEADERS)

    assert (refused.status_code, refused.headers["HX-Retarget"]) == (409, "#toasts")
    assert "start would put 10 vCPUs on 2 CPUs (5.00:1)" in refused.text
    assert operator_forced.status_code == 403
    assert "force: only an admin" in operator_forced.text
    assert forced.status_code == 200 and "badge-running" in forced.text


def test_a_refusal_writes_the_ratios_as_the_overcommit_page_does(client: TestClient) -> None:
    gamma = add_host(client, "gamma", node_uri("node-gamma.xml"))
    assert client.post(f"/api/v1/hosts/{gamma['id']}/refresh", params={"wait": 15}).is_success

    refused = client.post(f"/guests/{SPARE_1}/actions/start", headers=HEADERS)
    page = client.get(f"/hosts/{gamma['id']}/overcommit")

    assert "Policy 4.00:1 CPU, 1.00:1 memory" in page.text
    assert "(5.00:1), over the policy of 4.00:1" in refused.text
    assert "(1.50:1), over the policy of 1.00:1" in refused.text
