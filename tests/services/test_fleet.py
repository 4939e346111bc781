"""The overview's aggregate ratios agree with the full, guest-by-guest overcommit picture."""

from fastapi.testclient import TestClient

from app.services.fleet import host_ratios
from app.services.hosts import guest_sums, list_hosts
from app.services.overcommit import all_overcommit, set_host_policy


def test_the_aggregate_ratios_match_the_full_picture_of_every_host(
    client: TestClient, two_hosts: tuple[dict, dict], sessions
) -> None:
    alpha, _ = two_hosts
    with sessions() as session:
        set_host_policy(session, alpha["id"], cpu=0.5, memory=None)
        hosts = list_hosts(session)
        fast = host_ratios(session, hosts, guest_sums(session, [host.id for host in hosts]))
        full = all_overcommit(session)

    def sums(item) -> tuple:
        return (item.host_id, item.cpus, item.memory_kib, item.vcpus_running,
                item.vcpus_defined, item.memory_running_max_kib, item.memory_defined_kib,
                item.cpu_running, item.memory_running)  # fmt: skip

    assert [sums(i) for i in fast] == [sums(i) for i in full]
    assert fast[0].cpu_running.state == "near"  # alpha: 4 vCPUs on 8 CPUs, its own 0.5:1
