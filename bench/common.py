"""What the benchmarks share: a throwaway database, the result table and the targets line.

A benchmark puts the repository root on sys.path before importing this module (and app).
"""

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from app.migrate import upgrade
from tests.databases import throwaway_postgresql


@dataclass
class Row:
    """One line of a result table: what was measured, its value (a tuple for several columns),
    the target and whether it was met (None: no target)."""

    measure: str
    value: str | tuple[str, ...]
    target: str = ""
    ok: bool | None = None


@contextlib.contextmanager
def database(url: str | None, workdir: Path) -> Iterator[str]:
    """A migrated, empty database for the run; a temporary one is removed afterwards.

    A PostgreSQL URL names the server: a database is created on it and dropped at the end.
    Without a URL a new SQLite file in workdir is used.
    """
    if url is None:
        url = f"sqlite:///{workdir / 'bench.db'}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and Path(parsed.database).exists():
            sys.exit(f"refusing to use an existing SQLite file: {parsed.database}")
        upgrade(url)
        yield url
        return
    with throwaway_postgresql(url, "virtdeck_bench") as bench_url:
        yield bench_url


def p95(samples: Sequence[float]) -> float:
    """The 95th percentile (nearest rank) of the samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def print_table(header: Sequence[str], rows: Sequence[Row]) -> None:
    """The rows as a plain aligned table under header: measure, value columns, target, ok (a
    shorter header leaves the last columns out)."""
    cells = [tuple(header)] + [
        (
            r.measure,
            *(r.value if isinstance(r.value, tuple) else (r.value,)),
            r.target,
            "" if r.ok is None else ("yes" if r.ok else "NO"),
        )[: len(header)]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print("\n".join(lines))


def print_targets(rows: Sequence[Row]) -> None:
    """One line: how many of the rows' targets were met, naming those missed."""
    checked = [r for r in rows if r.ok is not None]
    missed = [r.measure.strip() for r in checked if not r.ok]
    if missed:
        print(f"targets: {len(missed)} of {len(checked)} missed ({', '.join(missed)})")
    else:
        print(f"targets: all {len(checked)} met")
