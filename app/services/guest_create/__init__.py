"""Create a guest: check the request against its host, then make its disk (empty, or from a base
image with a cloud-init seed), define and start it.

Everything is checked before anything is made, so a refused request leaves nothing on the host
(request.py: what needs no host; on_host.py: what does); a step that fails later takes back
what the earlier ones made (build.py). A request that must allocate a new volume runs as a job.
"""

from app.services.guest_create.build import Created, build_guest, create_guest, plan_create
from app.services.guest_create.cloud_init import CloudInit
from app.services.guest_create.on_host import CreatePlan, check_on_host
from app.services.guest_create.request import (
    IMAGE_MODES,
    BaseImage,
    CreateRequest,
    NewDisk,
    VolumeRef,
    check_guest_name,
    disk_choice,
    volume_name,
)

__all__ = [
    "IMAGE_MODES",
    "BaseImage",
    "CloudInit",
    "CreatePlan",
    "CreateRequest",
    "Created",
    "NewDisk",
    "VolumeRef",
    "build_guest",
    "check_guest_name",
    "check_on_host",
    "create_guest",
    "disk_choice",
    "plan_create",
    "volume_name",
]
