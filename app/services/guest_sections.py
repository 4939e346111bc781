"""The guest page's sections, like virt-manager's tabs: which a guest has, each with its URL."""

from dataclasses import dataclass

from app.errors import NotFound
from app.models import Guest
from app.virt.domain_xml import console_kinds

# Each section by its key in ?section=, with its heading; overview is the page without one.
SECTIONS = {
    "overview": "Overview",
    "console": "Console",
    "hardware": "Hardware",
    "snapshots": "Snapshots",
    "backups": "Backups",
    "activity": "Activity",
    "xml": "XML",
}


@dataclass(frozen=True)
class Section:
    """One section of a guest's page: its key, heading and URL."""

    key: str
    label: str
    url: str


def has_console(guest: Guest) -> bool:
    """Whether the guest is on its host with a VNC screen or a serial line to show."""
    return guest.gone_at is None and bool(console_kinds(guest.domain_xml))


def guest_sections(guest: Guest) -> list[Section]:
    """The sections the guest's page has, in the order the navigation lists them."""
    base = f"/guests/{guest.uuid}"
    return [
        Section(key, label, base if key == "overview" else f"{base}?section={key}")
        for key, label in SECTIONS.items()
        if key != "console" or has_console(guest)
    ]


def check_section(guest: Guest, section: str) -> str:
    """The section asked for, else NotFound naming the field and the sections there are."""
    if section == "console" and not has_console(guest):
        raise NotFound(
            f"section: {guest.name} has no console (no screen or serial line on its host)",
            field="section",
        )
    if section not in SECTIONS:
        known = ", ".join(SECTIONS)
        raise NotFound(f"section: no section '{section}' (one of {known})", field="section")
    return section
