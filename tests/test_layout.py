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


IMPORTS_APP = re.compile(r"^\s*(?:from|import) app\.(\w+)", re.M)
# What each layer may not import (DESIGN.md: virt -> services -> api/web; workers implement the
# services' ports).
FORBIDDEN = {
    "virt": lambda package: package not in ("virt", "errors", "units"),
    "services": lambda package: package in ("workers", "api", "web"),
    "api": lambda package: package in ("web", "virt", "workers"),
    "web": lambda package: package in ("api", "virt", "workers"),
}


def imported_packages(path: Path) -> set[str]:
    """The app packages (app.X) a module imports."""
    return set(IMPORTS_APP.findall(path.read_text()))


def test_each_layer_imports_only_what_the_layout_allows() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports app.{package}"
        for layer, forbidden in FORBIDDEN.items()
        for path in (ROOT / "app" / layer).rglob("*.py")
        for package in imported_packages(path)
        if forbidden(package)
    )

    assert offenders == []


def test_the_layout_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("from app.workers.sync import SyncManager\nimport app.web.htmx\n")

    assert imported_packages(module) == {"workers", "web"}
