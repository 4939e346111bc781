"""The NoCloud seed as an ISO 9660 image (volume label cidata, files user-data and meta-data),
made in memory with pycdlib: no external tool, and the same on every host."""

import io

import pycdlib

from app.services.guest_create.cloud_init import Seed

LABEL = "cidata"


def seed_volume_name(guest_name: str) -> str:
    """The name of a new guest's seed volume."""
    return f"{guest_name}-seed.iso"


def _add(iso: pycdlib.PyCdlib, name: str, data: bytes) -> None:
    """One file, named in ISO 9660 (8.3, upper case), Rock Ridge and Joliet."""
    short = name.replace("-", "").upper()[:8]
    iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")


def seed_iso(seed: Seed) -> bytes:
    """The ISO image holding the seed's documents."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    _add(iso, "user-data", seed.user_data.encode())
    _add(iso, "meta-data", seed.meta_data.encode())
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
