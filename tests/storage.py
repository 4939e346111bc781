"""Storage for create tests: clean-up on the test driver, throwaway pools on the real libvirtd."""

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

from app.errors import VirtdeckError
from app.virt import failures
from tests.libvirtd import IMAGES, virsh

TEST_DEFAULT = "test:///default"
DEFAULT_POOL = "default-pool"


def unique_name(prefix: str = "vdtest") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def domain_names(lv: Any) -> set[str]:
    """The names of every domain, running or not."""
    return {d.name() for d in lv.listAllDomains(0)}


def volume_names(lv: Any, pool: str = DEFAULT_POOL) -> set[str]:
    """The names of a pool's volumes."""
    return {v.name() for v in lv.storagePoolLookupByName(pool).listAllVolumes(0)}


def remove_prefixed(lv: Any, prefix: str, pool: str = DEFAULT_POOL) -> None:
    """Remove the domains and volumes whose names start with prefix (what one test made)."""
    for dom in lv.listAllDomains(0):
        if dom.name().startswith(prefix):
            with contextlib.suppress(VirtdeckError), failures.libvirt_errors():
                dom.destroy()
            with contextlib.suppress(VirtdeckError), failures.libvirt_errors():
                dom.undefine()
    for volume in lv.storagePoolLookupByName(pool).listAllVolumes(0):
        if volume.name().startswith(prefix):
            volume.delete(0)


def virsh_lines(*args: str) -> list[str]:
    """virsh's output as a sorted list of non-empty lines."""
    return sorted(line.strip() for line in virsh(*args).splitlines() if line.strip())


def pool_volumes(pool: str) -> list[str]:
    """The volume names `virsh vol-list` shows for a pool, rescanned first unless the pool is
    busy with a volume stream (then as libvirt last saw it, with the volumes it made since)."""
    virsh("pool-refresh", pool, check=False)
    lines = virsh("vol-list", pool).splitlines()[2:]  # past the header and its rule
    return sorted(line.split()[0] for line in lines if line.strip())


@contextlib.contextmanager
def throwaway_pool(prefix: str = "vdtest-pool") -> Iterator[str]:
    """A started dir pool <prefix>-<hex> under the images directory, removed afterwards."""
    name = unique_name(prefix)
    target = IMAGES / name
    virsh("pool-define-as", "--name", name, "dir", "--target", str(target))
    try:
        virsh("pool-build", name)
        virsh("pool-start", name)
        yield name
    finally:
        with contextlib.suppress(RuntimeError):
            for volume in pool_volumes(name):
                virsh("vol-delete", "--pool", name, volume, check=False)
        remove_pool(name)


def remove_pool(name: str) -> None:
    """Stop and undefine a pool on the real libvirtd and remove its directory, if they exist."""
    target = IMAGES / name
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)
    if target.is_dir() and target.parent == IMAGES:
        shutil.rmtree(target)


def remove_guest(name: str) -> None:
    """Stop and undefine a guest on the real libvirtd (with its NVRAM, snapshots' and
    checkpoints' metadata), if it exists."""
    virsh("destroy", name, check=False)
    virsh(
        "undefine", name, "--nvram", "--snapshots-metadata", "--checkpoints-metadata", check=False
    )
