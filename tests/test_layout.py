"""The seams of the layout hold: only app/virt talks to libvirt, each layer imports only what it
may, and tests share code through helper modules, never through one another."""

import ast
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


def imported_test_modules(path: Path) -> set[str]:
    """The test modules (files named test_*.py) a module imports, by dotted name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import is inside tests/ already; `from tests.x import test_y` names one.
            if node.level == 0 and not (node.module or "").startswith("tests"):
                continue
            module = "." * node.level + (node.module or "")
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name.rsplit(".", 1)[-1].startswith("test_")}
    return found


def test_no_test_module_imports_another_test_module() -> None:
    sources = list((ROOT / "tests").rglob("*.py"))
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources
        for module in imported_test_modules(path)
    )

    assert len(sources) > 50
    assert offenders == []


def test_the_test_module_rule_sees_every_way_of_importing_one(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import tests.api.test_guests\n"
        "from tests.virt.test_teardown import POOL\n"
        "from tests.api import test_hosts, helpers\n"
        "from .test_pages import HTMX\n"
        "from tests.conftest import add_host\n"
        "from tests.polling import finished_job\n"
        "import pytest\n"
    )

    assert imported_test_modules(module) == {
        "tests.api.test_guests",
        "tests.virt.test_teardown",
        "tests.api.test_hosts",
        ".test_pages",
    }
