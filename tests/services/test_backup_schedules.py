"""A retention policy's verdicts on backups of known dates (as Proxmox's prune), and when a
schedule's slots fall: daily, weekly, a missed one, and each guest's jitter."""

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import Invalid
from app.models import Backup, BackupSchedule
from app.services.backups.retention import Policy, prune
from app.services.backups.schedules import format_time, jitter, latest_slot, next_slot, parse_time


def at(text: str) -> datetime:
    """A UTC time from 'YYYY-MM-DD HH:MM'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def backups(*times: str, corrupt: tuple[int, ...] = ()) -> list[Backup]:
    """Backups numbered 1.. in the order given, succeeded unless their number is in corrupt."""
    return [
        Backup(id=n, started_at=at(t), status="corrupt" if n in corrupt else "succeeded")
        for n, t in enumerate(times, start=1)
    ]


def verdicts(found: list[Backup], policy: Policy) -> dict[int, str]:
    """Backup id -> 'kept (rule)' or 'removed'."""
    return {
        v.backup.id: f"kept ({v.reason})" if v.keep else "removed" for v in prune(found, policy)
    }


# Oldest first, ids 1 to 9: ISO weeks 4, 7, 9, 10, 10, 11, 11, 11, 11 of 2026.
HISTORY = backups(
    "2026-01-20 02:00",
    "2026-02-15 02:00",
    "2026-02-28 02:00",
    "2026-03-02 02:00",
    "2026-03-05 02:00",
    "2026-03-09 01:00",
    "2026-03-09 13:00",
    "2026-03-10 01:00",
    "2026-03-10 13:00",
)


def test_keep_last_keeps_the_newest_and_removes_the_rest() -> None:
    found = verdicts(HISTORY, Policy(keep_last=3))

    assert found == {9: "kept (last)", 8: "kept (last)", 7: "kept (last)",
                     6: "removed", 5: "removed", 4: "removed", 3: "removed", 2: "removed",
                     1: "removed"}  # fmt: skip


def test_each_rule_keeps_the_newest_of_its_periods_that_no_kept_backup_covers() -> None:
    found = verdicts(HISTORY, Policy(keep_last=1, keep_daily=2, keep_weekly=2, keep_monthly=3))

    assert found == {
        9: "kept (last)",  # 10 March 13:00
        8: "removed",  # 10 March 01:00: its day is covered by 9
        7: "kept (daily)",  # 9 March 13:00
        6: "removed",  # 9 March 01:00: not the newest of its day
        5: "kept (daily)",  # 5 March: the second day
        4: "removed",  # 2 March: week 10 is covered by 5, and the days are used up
        3: "kept (weekly)",  # 28 February: week 9
        2: "kept (weekly)",  # 15 February: week 7
        1: "kept (monthly)",  # 20 January: March and February are covered
    }


def test_fewer_weeks_leave_february_to_the_monthly_rule_that_finds_it_covered() -> None:
    found = verdicts(HISTORY, Policy(keep_last=1, keep_daily=2, keep_weekly=1, keep_monthly=3))

    assert [i for i, v in found.items() if v == "removed"] == [8, 6, 4, 2]
    assert found[3] == "kept (weekly)" and found[1] == "kept (monthly)"


def test_a_corrupt_backup_goes_once_older_than_every_kept_one_and_newer_ones_stay() -> None:
    found = verdicts(
        backups("2026-03-01 02:00", "2026-03-02 02:00", "2026-03-03 02:00", "2026-03-04 02:00",
                corrupt=(1, 4)),
        Policy(keep_last=2),
    )  # fmt: skip

    assert found == {3: "kept (last)", 2: "kept (last)", 1: "removed"}


def test_a_policy_that_keeps_nothing_or_a_negative_count_is_refused_naming_the_field() -> None:
    with pytest.raises(Invalid) as none:
        Policy.checked(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0)
    with pytest.raises(Invalid) as negative:
        Policy.checked(keep_last=1, keep_daily=-1, keep_weekly=0, keep_monthly=0)

    assert none.value.field == "keep_last"
    assert negative.value.field == "keep_daily"
    assert negative.value.message.startswith("keep_daily: ")


def schedule(
    frequency: str = "daily",
    *,
    time: str = "02:30",
    weekday: int | None = None,
    not_before: str = "2026-03-01 00:00",
    jitter_minutes: int = 0,
) -> BackupSchedule:
    """A saved schedule as the scheduler reads it."""
    return BackupSchedule(id=7, frequency=frequency, weekday=weekday, at_seconds=parse_time(time),
                          not_before=at(not_before), jitter_minutes=jitter_minutes)  # fmt: skip


def test_a_daily_slot_is_the_latest_time_of_day_passed_and_only_the_latest_missed_one() -> None:
    daily = schedule()

    assert latest_slot(daily, at("2026-03-10 02:29")) == at("2026-03-09 02:30")
    assert latest_slot(daily, at("2026-03-10 02:30")) == at("2026-03-10 02:30")
    # Down for three days: only the last slot is there to run.
    assert latest_slot(daily, at("2026-03-13 09:00")) == at("2026-03-13 02:30")
    assert next_slot(daily, at("2026-03-10 02:30")) == at("2026-03-11 02:30")


def test_a_weekly_slot_falls_on_its_day_and_none_comes_before_the_schedule_was_set() -> None:
    weekly = schedule("weekly", weekday=2, time="23:00:05")  # Wednesdays
    new = schedule(not_before="2026-03-10 03:00")

    assert latest_slot(weekly, at("2026-03-10 12:00")) == at("2026-03-04 23:00") + timedelta(
        seconds=5
    )
    assert next_slot(weekly, at("2026-03-10 12:00")) == at("2026-03-11 23:00") + timedelta(
        seconds=5
    )
    assert latest_slot(new, at("2026-03-10 12:00")) is None  # 02:30 today was before it
    assert latest_slot(new, at("2026-03-11 02:30")) == at("2026-03-11 02:30")


def test_each_guest_has_a_fixed_offset_within_the_jitter_window() -> None:
    spread = schedule(jitter_minutes=30)
    offsets = {jitter(spread, f"a1000000-0000-4000-8000-00000000000{n}") for n in range(8)}

    assert all(timedelta(0) <= o <= timedelta(minutes=30) for o in offsets)
    assert len(offsets) > 1
    assert jitter(spread, "a1000000-0000-4000-8000-000000000001") == jitter(
        spread, "a1000000-0000-4000-8000-000000000001"
    )
    assert jitter(schedule(), "a1000000-0000-4000-8000-000000000001") == timedelta(0)


def test_times_are_read_and_shown_as_typed_and_bad_ones_name_the_field() -> None:
    assert (parse_time("02:30"), parse_time("23:59:59")) == (9000, 86399)
    assert (format_time(9000), format_time(86399)) == ("02:30", "23:59:59")
    for bad in ("24:00", "2:30", "02:60", "noon", ""):
        with pytest.raises(Invalid) as refused:
            parse_time(bad)
        assert refused.value.field == "time"
