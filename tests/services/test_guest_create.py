"""The domain XML of a new guest, its platform, taking back a failed create, and the job runner."""

import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from app.db import transaction
from app.errors import Conflict, VirtdeckError
from app.models import Job
from app.models.base import utcnow
from app.services.guest_create import CreatePlan, NewDisk, build_guest
from app.services.jobs import INTERRUPTED
from app.virt.build import (
    DiskSource,
    GuestPlan,
    Platform,
    define_guest,
    domain_xml,
    host_platform,
)
from app.virt.connection import HostConnection
from app.virt.cpu import CpuConfig
from app.workers.jobs import Interrupted, JobRunner
from tests.polling import until
from tests.storage import (
    DEFAULT_POOL,
    TEST_DEFAULT,
    domain_names,
    remove_prefixed,
    unique_name,
    volume_names,
)

KVM = Platform(
    domain_type="kvm", arch="x86_64", emulator="/usr/bin/qemu-system-x86_64", max_vcpus=255,
    firmware=("bios", "uefi"), cdrom_bus="ide",
    cpu_modes=("host-passthrough", "host-model", "custom", "default"), cpu_models=("EPYC",),
)  # fmt: skip


def open_host(uri: str) -> HostConnection:
    return HostConnection(uri, keepalive=(3, 3), on_close=lambda _reason: None)


@pytest.fixture
def conn() -> Iterator[HostConnection]:
    """A connection to the shared test:///default, as the sync worker would hold it."""
    opened = open_host(TEST_DEFAULT)
    yield opened
    opened.close()


@pytest.fixture
def prefix(conn: HostConnection) -> Iterator[str]:
    name = unique_name()
    yield name
    remove_prefixed(conn.lv, name)


def test_a_kvm_guest_gets_virtio_devices_vnc_on_localhost_a_serial_console_and_a_balloon() -> None:
    plan = GuestPlan(
        uuid="c0000000-0000-4000-8000-000000000001", name="web-3", vcpus=2, memory_mib=1024,
        platform=KVM, firmware="uefi", network="lan",
        cpu=CpuConfig("host-passthrough", disabled=("arch-capabilities",)),
        disk=DiskSource("/dev/vg0/web-3", kind="block", format="raw"),
        cdrom=DiskSource("/isos/debian.iso", format="raw"),
    )  # fmt: skip

    domain = ET.fromstring(domain_xml(plan))

    assert domain.get("type") == "kvm"
    assert (domain.findtext("name"), domain.findtext("uuid")) == ("web-3", plan.uuid)
    assert domain.find("memory").attrib == {"unit": "MiB"} and domain.findtext("memory") == "1024"
    assert domain.findtext("currentMemory") == "1024" and domain.findtext("vcpu") == "2"
    assert domain.find("os").get("firmware") == "efi"
    assert domain.find("os/type").attrib == {"arch": "x86_64"}
    assert [b.get("dev") for b in domain.findall("os/boot")] == ["hd", "cdrom"]
    assert domain.find("cpu").get("mode") == "host-passthrough"
    assert [f.attrib for f in domain.findall("cpu/feature")] == [
        {"policy": "disable", "name": "arch-capabilities"}
    ]
    assert domain.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"
    disk, cdrom = domain.findall("devices/disk")
    assert (disk.get("type"), disk.find("source").attrib) == ("block", {"dev": "/dev/vg0/web-3"})
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None
    assert cdrom.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    nic = domain.find("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "lan"
    assert nic.find("model").get("type") == "virtio"
    graphics = domain.find("devices/graphics")
    assert graphics.attrib == {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1"}
    assert domain.find("devices/console/target").get("type") == "serial"
    assert domain.find("devices/memballoon").get("model") == "virtio"


def test_markup_in_a_name_or_path_stays_text_in_the_xml() -> None:
    plan = GuestPlan(
        uuid="c0000000-0000-4000-8000-000000000002", name="a'<b>&", vcpus=1, memory_mib=64,
        platform=KVM, disk=DiskSource("/img/x'\"><devices/>.qcow2"),
    )  # fmt: skip

    domain = ET.fromstring(domain_xml(plan))

    assert domain.findtext("name") == "a'<b>&"
    assert domain.find("devices/disk/source").get("file") == "/img/x'\"><devices/>.qcow2"
    assert len(domain.findall("devices")) == 1


def test_the_test_driver_offers_its_own_domain_type_and_bios_only(conn: HostConnection) -> None:
    platform = host_platform(conn)

    assert (platform.domain_type, platform.arch) == ("test", "i686")
    assert (platform.firmware, platform.max_vcpus) == (("bios",), None)
    assert (platform.cpu_modes, platform.cpu_models) == (("default",), ())


def test_a_named_cpu_model_is_exact_and_the_hypervisor_default_writes_no_cpu() -> None:
    def cpu_of(config: CpuConfig) -> ET.Element | None:
        plan = GuestPlan(
            uuid="c0000000-0000-4000-8000-000000000003", name="m", vcpus=1, memory_mib=64,
            platform=KVM, cpu=config,
        )  # fmt: skip
        return ET.fromstring(domain_xml(plan)).find("cpu")

    named = cpu_of(CpuConfig("custom", "EPYC"))

    assert named.attrib == {"mode": "custom", "match": "exact"}
    assert (named.find("model").text, named.find("model").get("fallback")) == ("EPYC", "forbid")
    assert cpu_of(CpuConfig("default", disabled=("arch-capabilities",))) is None
    assert CpuConfig("default").with_host_limits(("x",)) == CpuConfig("default")
    assert CpuConfig("host-model").with_host_limits(("x",)).label() == "host-model without x"


def plan_with_new_volume(name: str, platform: Platform, *, start: bool) -> CreatePlan:
    """A checked 64 MiB guest with a new 1 GiB volume in default-pool."""
    guest = GuestPlan(uuid=str(uuid.uuid4()), name=name, vcpus=1, memory_mib=64, platform=platform)
    return CreatePlan(
        host_id=1, guest=guest, new_disk=NewDisk(pool=DEFAULT_POOL, size_gib=1), start=start
    )


def test_a_failed_define_takes_back_the_volume_it_made(conn: HostConnection, prefix: str) -> None:
    name = f"{prefix}-broken"
    platform = replace(host_platform(conn), domain_type="vdtest-no-such-hypervisor")
    plan = plan_with_new_volume(name, platform, start=True)
    progress: list[str] = []

    with pytest.raises(VirtdeckError, match="vdtest-no-such-hypervisor"):
        build_guest(conn, plan, report=lambda _p, message: progress.append(message))

    assert progress == [f"making a 1 GiB volume in pool {DEFAULT_POOL}", "defining the guest"]
    assert f"{name}.qcow2" not in volume_names(conn.lv)
    assert name not in domain_names(conn.lv)


def test_a_create_that_loses_a_race_for_the_name_leaves_the_other_guest_alone(
    conn: HostConnection, prefix: str
) -> None:
    name = f"{prefix}-race"
    plan = plan_with_new_volume(name, host_platform(conn), start=False)
    winner = replace(plan.guest, uuid=str(uuid.uuid4()))
    define_guest(conn, winner)  # between the checks and the define of the other create

    with pytest.raises(Conflict, match="already exists"):
        build_guest(conn, plan)

    assert conn.guest(winner.uuid).spec.name == name
    assert f"{name}.qcow2" not in volume_names(conn.lv)


def job_row(sessions, job_id: int) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def new_job(sessions) -> int:
    with transaction(sessions) as session:
        job = Job(kind="test", status="queued", progress=0.0)
        session.add(job)
        session.flush()
        return job.id


def test_the_runner_records_progress_then_the_result_or_the_error(sessions) -> None:
    runner = JobRunner(sessions=sessions, workers=2)
    release = threading.Event()

    def slow(report) -> dict:
        report(0.5, "half way")
        release.wait(10)
        return {"guest_uuid": "u"}

    def refused(_report) -> dict:
        raise Conflict("the pool is busy")

    def broken(_report) -> dict:
        raise RuntimeError("secret detail")

    ids = [new_job(sessions) for _ in range(3)]
    try:
        for job_id, work in zip(ids, (slow, refused, broken), strict=True):
            runner.submit(job_id, work)
        until(lambda: job_row(sessions, ids[0]).message == "half way", timeout=10)
        running = job_row(sessions, ids[0])
        assert (running.status, running.progress) == ("running", 0.5)
        release.set()
        until(lambda: all(job_row(sessions, i).finished_at for i in ids), timeout=10)
    finally:
        release.set()
        runner.stop()

    done, failed, crashed = (job_row(sessions, i) for i in ids)
    assert (done.status, done.progress, done.result) == ("succeeded", 1.0, {"guest_uuid": "u"})
    assert (failed.status, failed.error) == ("failed", "the pool is busy")
    assert (crashed.status, crashed.error) == ("failed", "internal error: RuntimeError")


def test_stopping_the_runner_fails_the_jobs_it_had_not_begun(sessions) -> None:
    runner = JobRunner(sessions=sessions, workers=1)
    release = threading.Event()
    first, second = new_job(sessions), new_job(sessions)

    runner.submit(first, lambda _report: release.wait(10) and {})
    runner.submit(second, lambda _report: {})
    until(lambda: job_row(sessions, first).status == "running", timeout=10)
    runner.stop(grace=0)
    release.set()

    assert job_row(sessions, second).status == "failed"
    assert job_row(sessions, second).error.startswith("interrupted")
    until(lambda: job_row(sessions, first).status == "succeeded", timeout=10)


def test_a_job_still_running_when_the_runner_stops_is_interrupted_and_undoes_its_work(
    sessions,
) -> None:
    runner = JobRunner(sessions=sessions, workers=1)
    undone = threading.Event()

    def copying(report) -> dict:
        try:
            while True:
                report(0.5, "copying")
                time.sleep(0.02)
        except Interrupted:
            undone.set()  # as a backup removes its files
            raise

    job_id = new_job(sessions)
    runner.submit(job_id, copying)
    until(lambda: job_row(sessions, job_id).status == "running", timeout=10)
    runner.stop(grace=0.2)

    assert undone.is_set()
    assert (job_row(sessions, job_id).status, job_row(sessions, job_id).error) == (
        "failed",
        INTERRUPTED,
    )


def test_a_job_that_says_it_is_done_as_the_runner_stops_is_not_interrupted(sessions) -> None:
    runner = JobRunner(sessions=sessions, workers=1)
    past_undoing = threading.Event()

    def restoring(report) -> dict:
        past_undoing.wait(10)  # the guest is defined again: there is nothing to take back
        report(1.0, "done")
        return {"restored": True}

    job_id = new_job(sessions)
    runner.submit(job_id, restoring)
    until(lambda: job_row(sessions, job_id).status == "running", timeout=10)
    stopping = threading.Thread(target=runner.stop, kwargs={"grace": 0.1})
    stopping.start()
    time.sleep(0.5)  # past the grace: the runner has told its jobs to end
    past_undoing.set()
    stopping.join(10)

    assert (job_row(sessions, job_id).status, job_row(sessions, job_id).result) == (
        "succeeded",
        {"restored": True},
    )


def test_the_runner_fails_what_a_stopped_instance_left_unfinished(sessions) -> None:
    left, recent = new_job(sessions), new_job(sessions)
    with transaction(sessions) as session:  # left: queued two minutes ago, nobody ran it since
        session.get(Job, left).created_at = utcnow() - timedelta(minutes=2)

    runner = JobRunner(sessions=sessions)
    runner.start()
    runner.stop(grace=0)

    assert job_row(sessions, recent).status == "queued"  # maybe another instance's, just made
    assert (job_row(sessions, left).status, job_row(sessions, left).message) == ("failed", "failed")
    assert job_row(sessions, left).error.startswith("interrupted")
