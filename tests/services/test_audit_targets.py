"""Audit targets as the log and the live updates read them: a row's targets whole and in
order, or none when its text is something else; a row about a guest refreshes that guest's
Activity list, whatever else it names."""

from app.live import topics_of
from app.models.audit import AuditEntry, Target, audit_target, parse_targets

UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def test_a_row_whose_first_target_is_a_guest_refreshes_its_activity() -> None:
    about_guest = [
        audit_target("guest", UUID),
        audit_target("guest", UUID, "web-1"),
        f"{audit_target('guest', UUID)}, job:7",
        f"{audit_target('guest', UUID, 'web (old)')}, job:7",
    ]

    for target in about_guest:
        assert topics_of(AuditEntry(target=target)) == {"activity", f"activity-{UUID}"}, target
    assert topics_of(AuditEntry(target="host:3 (kvm-1), pool:images")) == {"activity"}
    assert topics_of(AuditEntry(target=None)) == {"activity"}


def test_targets_are_read_whole_or_not_at_all() -> None:
    assert parse_targets("host:3 (kvm-1), pool:images") == [
        Target("host", "3", "kvm-1"),
        Target("pool", "images", None),
    ]
    assert parse_targets("user:<b>x y</b>") == []  # shown as it was recorded
    assert parse_targets(audit_target("guest", UUID, "web (old)")) == []
