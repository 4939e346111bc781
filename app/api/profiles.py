"""/api/v1/profiles: saved create choices (read by viewers, kept by operators); a guest is made
from one with POST /api/v1/profiles/{id}/guests (app.api.guest_create)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.guest_create import LONG, ImageIn
from app.deps import RowId, SessionDep, guard, needs
from app.models import Profile
from app.models.audit import audit_target
from app.services import guest_create, profiles
from app.services.auth import Permission, Principal

router = APIRouter(prefix="/profiles", tags=["profiles"])


class ProfileDisk(BaseModel):
    """The new disk: its pool and size."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(max_length=LONG)
    size_gib: int


class ProfileCloudInit(BaseModel):
    """The cloud-init user and SSH keys (a password is given at each create, never saved)."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(max_length=LONG, examples=["debian"])
    ssh_keys: list[str] = Field([], max_length=64)


class ProfileIn(BaseModel):
    """A profile: a create request without the guest's name, password and other one-offs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=LONG, examples=["small-debian"])
    vcpus: int = Field(examples=[1])
    memory_mib: int = Field(examples=[1024])
    host_id: RowId | None = Field(None, description="none: the create names the host")
    disk: ProfileDisk
    image: ImageIn | None = Field(None, description="none: an empty new disk")
    network: str | None = Field(None, max_length=LONG)
    cloud_init: ProfileCloudInit | None = Field(None, description="needs an image")

    def fields(self) -> profiles.ProfileFields:
        """The service's profile."""
        return profiles.ProfileFields(
            name=self.name,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            disk=guest_create.NewDisk(pool=self.disk.pool, size_gib=self.disk.size_gib),
            host_id=self.host_id,
            image=self.image.image() if self.image else None,
            network=self.network,
            cloud_init_user=self.cloud_init.user if self.cloud_init else None,
            ssh_keys=tuple(self.cloud_init.ssh_keys) if self.cloud_init else (),
        )


class ProfileOut(ProfileIn):
    """A saved profile."""

    model_config = ConfigDict(extra="ignore")

    id: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: Profile) -> "ProfileOut":
        """The profile as the API shows it."""
        fields = profiles.profile_fields(profile)
        image = fields.image
        return cls(
            id=profile.id,
            name=fields.name,
            vcpus=fields.vcpus,
            memory_mib=fields.memory_mib,
            host_id=fields.host_id,
            disk=ProfileDisk(pool=fields.disk.pool, size_gib=fields.disk.size_gib),
            image=ImageIn(pool=image.pool, volume=image.volume, format=image.format,
                          mode=image.mode) if image else None,
            network=fields.network,
            cloud_init=ProfileCloudInit(user=fields.cloud_init_user, ssh_keys=list(fields.ssh_keys))
            if fields.cloud_init_user else None,
            created_by=profile.created_by,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )  # fmt: skip


REFUSED = {
    409: {"description": "another profile has the name"},
    422: {"description": "a field is not acceptable; `field` names it"},
}


@router.get("", response_model=list[ProfileOut], dependencies=guard(Permission.VIEW))
def list_profiles(session: SessionDep) -> list[ProfileOut]:
    """Every saved profile, by name."""
    return [ProfileOut.of(profile) for profile in profiles.list_profiles(session)]


@router.get("/{profile_id:id}", response_model=ProfileOut, dependencies=guard(Permission.VIEW))
def get_profile(profile_id: int, session: SessionDep) -> ProfileOut:
    """One profile."""
    return ProfileOut.of(profiles.get_profile(session, profile_id))


@router.post("", response_model=ProfileOut, status_code=status.HTTP_201_CREATED, responses=REFUSED)
def create_profile(
    request: Request,
    body: ProfileIn,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "profile.create")],
) -> ProfileOut:
    """Save a profile; what it names on a host is checked when a guest is made from it."""
    profile = profiles.create_profile(session, body.fields(), created_by=principal.username)
    request.state.audit_target = audit_target("profile", profile.id, profile.name)
    session.commit()
    return ProfileOut.of(profile)


@router.put("/{profile_id:id}", response_model=ProfileOut, responses=REFUSED)
def replace_profile(
    request: Request,
    profile_id: int,
    body: ProfileIn,
    session: SessionDep,
    _principal: Annotated[Principal, needs(Permission.OPERATE, "profile.update")],
) -> ProfileOut:
    """Change every field of a profile."""
    request.state.audit_target = audit_target("profile", profile_id)
    profile = profiles.replace_profile(session, profile_id, body.fields())
    request.state.audit_target = audit_target("profile", profile.id, profile.name)
    session.commit()
    return ProfileOut.of(profile)


@router.delete("/{profile_id:id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(
    request: Request,
    profile_id: int,
    session: SessionDep,
    _principal: Annotated[Principal, needs(Permission.OPERATE, "profile.delete")],
) -> Response:
    """Remove a profile (guests made from it stay as they are)."""
    request.state.audit_target = audit_target("profile", profile_id)
    profile = profiles.delete_profile(session, profile_id)
    request.state.audit_target = audit_target("profile", profile.id, profile.name)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
