"""Saved create profiles: check, store, list, change and remove them, and turn one into a create
request. A profile is checked when saved; what it names on a host (pool, image, network) is
checked again by the create, which refuses naming the field when it is gone."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.models import Host, Profile
from app.services.guest_create.cloud_init import CloudInit, check_ssh_keys, check_user
from app.services.guest_create.request import (
    MAX_DISK_GIB,
    MAX_MEMORY_MIB,
    MAX_REF,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    NAME,
    NAME_RULE,
    BaseImage,
    CreateRequest,
    NewDisk,
    check_image,
    check_seeded_image,
)


@dataclass(frozen=True)
class ProfileFields:
    """What a profile says; nothing in it is trusted yet."""

    name: str
    vcpus: int
    memory_mib: int
    disk: NewDisk
    host_id: int | None = None
    image: BaseImage | None = None
    network: str | None = None
    cloud_init_user: str | None = None
    ssh_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class FromProfile:
    """What a create from a profile adds to it: the new guest's name, and what is not saved."""

    name: str
    host_id: int | None = None
    password: str | None = None
    hostname: str | None = None
    user_data: str | None = None
    start: bool = False
    force: bool = False


def _within(value: int, field: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise Invalid(f"{field}: a whole number from {low} to {high}", field=field)


def _check_ref(value: str | None, field: str) -> None:
    """A pool, volume or network name to store: printable, 1 to MAX_REF characters."""
    if value is not None and not (1 <= len(value) <= MAX_REF and value.isprintable()):
        raise Invalid(f"{field}: 1 to {MAX_REF} printable characters", field=field)


def check_profile(session: Session, fields: ProfileFields) -> None:
    """The profile is acceptable as saved; Invalid naming the field if not."""
    if not NAME.fullmatch(fields.name or ""):
        raise Invalid(f"name: {NAME_RULE}", field="name")
    _within(fields.vcpus, "vcpus", 1, MAX_VCPUS)
    _within(fields.memory_mib, "memory_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB)
    _within(fields.disk.size_gib, "disk.size_gib", 1, MAX_DISK_GIB)
    _check_ref(fields.disk.pool, "disk.pool")
    _check_ref(fields.network, "network")
    if fields.host_id is not None and session.get(Host, fields.host_id) is None:
        raise Invalid(
            "host_id: no such host; leave it out to name the host at create", field="host_id"
        )
    if fields.image is not None:
        check_image(fields.image)
        _check_ref(fields.image.pool, "image.pool")
        _check_ref(fields.image.volume, "image.volume")
    if fields.cloud_init_user is not None:
        check_seeded_image(fields.image)
        check_user(fields.cloud_init_user)
    elif fields.ssh_keys:
        raise Invalid(
            "cloud_init.user: name the user the SSH keys are for", field="cloud_init.user"
        )
    check_ssh_keys(fields.ssh_keys)


def _write(profile: Profile, fields: ProfileFields) -> None:
    image = fields.image
    profile.name, profile.vcpus, profile.memory_mib = fields.name, fields.vcpus, fields.memory_mib
    profile.disk_size_gib, profile.pool = fields.disk.size_gib, fields.disk.pool
    profile.host_id, profile.network = fields.host_id, fields.network
    profile.image_pool = image.pool if image else None
    profile.image_volume = image.volume if image else None
    profile.image_format = image.format if image else None
    profile.image_mode = image.mode if image else None
    profile.cloud_init_user, profile.ssh_keys = fields.cloud_init_user, list(fields.ssh_keys)


def _store(session: Session, profile: Profile, fields: ProfileFields) -> Profile:
    """Write the fields into the profile and save it, unless another profile has its name."""
    taken = Conflict(f"name: a profile called '{fields.name}' already exists", field="name")
    if session.scalar(select(Profile.id).where(Profile.name == fields.name)) not in (
        None,
        profile.id,
    ):
        raise taken
    _write(profile, fields)
    session.add(profile)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request saved the same name
        raise taken from exc
    return profile


def list_profiles(session: Session) -> list[Profile]:
    """Every profile, by name."""
    return list(session.scalars(select(Profile).order_by(Profile.name)))


def get_profile(session: Session, profile_id: int) -> Profile:
    """One profile, or NotFound."""
    profile = session.get(Profile, profile_id)
    if profile is None:
        raise NotFound(f"profile {profile_id} not found")
    return profile


def create_profile(session: Session, fields: ProfileFields, *, created_by: str) -> Profile:
    """Save a new profile once it is acceptable and its name is free."""
    check_profile(session, fields)
    return _store(session, Profile(created_by=created_by), fields)


def replace_profile(session: Session, profile_id: int, fields: ProfileFields) -> Profile:
    """Change every field of a profile once the new ones are acceptable."""
    profile = get_profile(session, profile_id)
    check_profile(session, fields)
    return _store(session, profile, fields)


def delete_profile(session: Session, profile_id: int) -> Profile:
    """Remove a profile (guests made from it are not touched)."""
    profile = get_profile(session, profile_id)
    session.delete(profile)
    session.flush()
    return profile


def profile_fields(profile: Profile) -> ProfileFields:
    """What a stored profile says."""
    image = None
    if profile.image_volume is not None:
        image = BaseImage(
            pool=profile.image_pool or "",
            volume=profile.image_volume,
            format=profile.image_format or "qcow2",
            mode=profile.image_mode or "copy",
        )
    return ProfileFields(
        name=profile.name,
        vcpus=profile.vcpus,
        memory_mib=profile.memory_mib,
        disk=NewDisk(pool=profile.pool, size_gib=profile.disk_size_gib),
        host_id=profile.host_id,
        image=image,
        network=profile.network,
        cloud_init_user=profile.cloud_init_user,
        ssh_keys=tuple(profile.ssh_keys or ()),
    )


def profile_of(name: str, request: CreateRequest) -> ProfileFields:
    """A create request's choices as a profile called name (the password is never saved)."""
    if not isinstance(request.disk, NewDisk):
        raise Invalid(
            "disk: a profile makes a new disk; choose a new volume or a base image", field="disk"
        )
    cloud_init = request.cloud_init
    return ProfileFields(
        name=name,
        vcpus=request.vcpus,
        memory_mib=request.memory_mib,
        disk=request.disk,
        host_id=request.host_id,
        image=request.image,
        network=request.network,
        cloud_init_user=cloud_init.user if cloud_init else None,
        ssh_keys=cloud_init.ssh_keys if cloud_init else (),
    )


def profile_request(profile: Profile, given: FromProfile) -> CreateRequest:
    """The create request a profile makes with what the create adds to it."""
    fields = profile_fields(profile)
    cloud_init = None
    if fields.cloud_init_user is not None:
        cloud_init = CloudInit(
            user=fields.cloud_init_user,
            password=given.password,
            ssh_keys=fields.ssh_keys,
            hostname=given.hostname,
            user_data=given.user_data,
        )
    return CreateRequest(
        host_id=given.host_id if given.host_id is not None else fields.host_id,
        name=given.name,
        vcpus=fields.vcpus,
        memory_mib=fields.memory_mib,
        disk=fields.disk,
        image=fields.image,
        cloud_init=cloud_init,
        network=fields.network,
        start=given.start,
        force=given.force,
    )
