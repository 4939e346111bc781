"""The one vocabulary of guest states: libvirt's, the transition we ask for, and ours.

Each state carries its predicates (is it on? does it hold host resources?) and its CSS slug, so
that services and templates ask the state instead of listing states of their own.
"""

from enum import StrEnum


class GuestState(StrEnum):
    """A guest's state as shown: libvirt's, a pending transition, gone, or unknown."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # libvirt: being shut down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    NOSTATE = "nostate"
    SHUTTING_DOWN = "shutting down"  # we asked for an ACPI shutdown; libvirt still says running
    GONE = "gone"  # no longer on its host
    UNKNOWN = "unknown"  # its host is unreachable

    @classmethod
    def of(cls, value: str) -> "GuestState":
        """The state for a stored string; one libvirt never named counts as nostate."""
        return _BY_VALUE.get(value, cls.NOSTATE)  # a dict, not cls(value): lists ask per guest

    @property
    def label(self) -> str:
        """The state in plain words, as pages show it ("shut off", not libvirt's "shutoff")."""
        return _LABELS.get(self, self.value)

    @property
    def css(self) -> str:
        """The state as a CSS class suffix (no spaces): badge-shutting-down."""
        return self.value.replace(" ", "-")

    @property
    def from_libvirt(self) -> bool:
        """libvirt reports this state (the others are virtdeck's)."""
        return self in _LIBVIRT

    @property
    def executing(self) -> bool:
        """The guest's vCPUs run: the state a shutdown, reboot or suspend starts from."""
        return self in (GuestState.RUNNING, GuestState.BLOCKED)

    @property
    def still_on(self) -> bool:
        """A shutdown we asked for is not finished while libvirt reports this state."""
        return self.executing or self is GuestState.SHUTDOWN

    @property
    def holds_resources(self) -> bool:
        """A QEMU process holds the guest's vCPUs and memory (what overcommit counts)."""
        return self in _HOLDS_RESOURCES

    @property
    def has_live_memory(self) -> bool:
        """A snapshot takes the guest's memory by default."""
        return self.executing or self is GuestState.PAUSED

    @property
    def settling(self) -> bool:
        """On its way off: pages re-poll until it settles."""
        return self in (GuestState.SHUTDOWN, GuestState.SHUTTING_DOWN)

    @property
    def actionable(self) -> bool:
        """Actions may be tried: the guest is on a host we can reach."""
        return self not in (GuestState.GONE, GuestState.UNKNOWN)


_BY_VALUE = {state.value: state for state in GuestState}
_LABELS = {
    GuestState.SHUTDOWN: "shutting down",
    GuestState.SHUTOFF: "shut off",
    GuestState.PMSUSPENDED: "suspended to memory",
    GuestState.NOSTATE: "no state",
}
_LIBVIRT = frozenset(GuestState) - {
    GuestState.SHUTTING_DOWN,
    GuestState.GONE,
    GuestState.UNKNOWN,
}
_HOLDS_RESOURCES = frozenset(
    {
        GuestState.RUNNING,
        GuestState.BLOCKED,
        GuestState.PAUSED,
        GuestState.SHUTDOWN,
        GuestState.PMSUSPENDED,
    }
)
LIBVIRT_STATES = tuple(state for state in GuestState if state.from_libvirt)
# The states whose guests a query counts as up: a QEMU process holds their resources.
RESOURCE_STATES = tuple(state for state in GuestState if state.holds_resources)
