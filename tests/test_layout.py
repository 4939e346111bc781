"""The seams of the layout hold: only app/virt talks to libvirt."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTS_LIBVIRT = re.compile(r"^\s*(import libvirt\b|from libvirt\b)", re.M)


def test_only_app_virt_imports_libvirt() -> None:
    sources = [
        path
        for folder in ("app", "tests", "bench", "migrations")
        for path in (ROOT / folder).rglob("*.py")
    ]
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if IMPORTS_LIBVIRT.search(path.read_text()) and "app/virt/" not in path.as_posix()
    ]

    assert len(sources) > 50
    assert offenders == []
