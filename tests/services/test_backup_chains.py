"""Retention's verdicts on chains of incremental backups of known dates: a kept backup keeps what
it builds on (and says which backup depends on it), a chain is never cut in the middle, and the
incrementals of a corrupt full backup count as no restore point but stay until newer ones are
kept."""

from datetime import UTC, datetime

from app.models import Backup
from app.services.backups.retention import Policy, prune


def chain(
    *times: str, first: int = 1, parent: int | None = None, status: dict[int, str] | None = None
) -> list[Backup]:
    """Backups numbered from first, in the order given (oldest first), each built on the one
    before (the first on parent: none makes it a full backup); succeeded unless status says."""
    made = []
    for n, text in enumerate(times, start=first):
        made.append(
            Backup(
                id=n,
                started_at=datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC),
                status=(status or {}).get(n, "succeeded"),
                kind="incremental" if made or parent else "full",
                parent_id=made[-1].id if made else parent,
            )
        )
    return made


def verdicts(found: list[Backup], policy: Policy) -> dict[int, str]:
    """Backup id -> 'kept (why)' or 'removed: why'."""
    return {
        v.backup.id: f"kept ({v.reason})" if v.keep else f"removed: {v.reason}"
        for v in prune(found, policy)
    }


def test_the_full_backup_and_incrementals_a_kept_one_builds_on_are_kept_and_say_why() -> None:
    older = chain("2026-03-01 02:00", "2026-03-02 02:00")
    newer = chain("2026-03-03 02:00", "2026-03-04 02:00", "2026-03-05 02:00", first=3)

    found = verdicts(older + newer, Policy(keep_last=1))

    assert found == {
        5: "kept (last)",
        4: "kept (backup 5 depends on it)",
        3: "kept (backup 5 depends on it)",
        2: "removed: no rule keeps it",
        1: "removed: no rule keeps it",
    }


def test_a_chain_is_only_ever_shortened_at_its_newest_end() -> None:
    # February's newest backup (2) is in the middle of a chain that went on into March (3);
    # March is covered by the new full backup 4.
    spanning = chain("2026-02-27 02:00", "2026-02-28 02:00", "2026-03-01 02:00")
    new_full = chain("2026-03-02 02:00", first=4)

    found = verdicts(spanning + new_full, Policy(keep_last=1, keep_monthly=2))

    assert found == {
        4: "kept (last)",
        3: "removed: no rule keeps it",
        2: "kept (monthly)",
        1: "kept (backup 2 depends on it)",
    }


def test_a_running_incremental_keeps_the_backup_it_builds_on() -> None:
    older = chain("2026-03-01 02:00")
    newer = chain("2026-03-02 02:00", first=2)
    running = chain("2026-03-03 02:00", first=3, parent=1, status={3: "running"})

    found = verdicts(older + newer + running, Policy(keep_last=1))

    assert found == {2: "kept (last)", 1: "kept (backup 3 depends on it)"}


def test_incrementals_of_a_corrupt_full_count_as_no_restore_point_and_go_once_older() -> None:
    good = chain("2026-03-01 02:00", "2026-03-02 02:00")
    broken = chain("2026-03-03 02:00", "2026-03-04 02:00", first=3, status={3: "corrupt"})
    newest = chain("2026-03-05 02:00", "2026-03-06 02:00", first=5)

    # The broken chain is newer than every restore point the rules keep: it stays, unjudged.
    while_newest = verdicts(good + broken, Policy(keep_last=2))
    # Once a newer full backup's chain gives kept restore points past it, it goes.
    after_newer = verdicts(good + broken + newest, Policy(keep_last=2))

    assert while_newest == {2: "kept (last)", 1: "kept (last)"}
    assert after_newer == {
        6: "kept (last)",
        5: "kept (last)",
        4: "removed: cannot be restored: backup 3 is corrupt",
        3: "removed: corrupt",
        2: "removed: no rule keeps it",
        1: "removed: no rule keeps it",
    }
