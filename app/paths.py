"""The shapes identifiers may take in a URL, checked when a request is matched to its route.

Routes name them: /guests/{uuid:guest}, /hosts/{host_id:id},
/guests/{uuid:guest}/snapshots/{name:snapshot}, .../actions/{action:word},
/hosts/{host_id:id}/pools/{pool:label}. A URL whose identifier has another shape matches no route,
so it is a 404 before anything runs: nothing is authenticated, recorded in the audit log or
published to live pages with it. Importing this module registers them; both routers do so first.
"""

from starlette.convertors import Convertor, register_url_convertor

from app.services.snapshots import NAME as SNAPSHOT_NAME


class _Text(Convertor[str]):
    """A string of one shape, kept as it is (or lowercased)."""

    def __init__(self, regex: str, *, lower: bool = False) -> None:
        self.regex = regex
        self.lower = lower

    def convert(self, value: str) -> str:
        return value.lower() if self.lower else value

    def to_string(self, value: str) -> str:
        return str(value)


class _Id(Convertor[int]):
    """A row id: at most 9 digits, so it always fits the databases' 32-bit integer columns."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


HEX = "[0-9a-fA-F]"
# libvirt's UUIDs, in either case; the inventory stores them lowercased.
register_url_convertor(
    "guest", _Text(f"{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}", lower=True)
)
register_url_convertor("id", _Id())
register_url_convertor("snapshot", _Text(SNAPSHOT_NAME.pattern))
# Names of guest actions (the route's enum says which).
register_url_convertor("word", _Text("[a-z_]{1,32}"))
# Names that libvirt makes and virtdeck only passes on (storage pools): no line breaks or other
# control characters, no '/'.
register_url_convertor("label", _Text(r"[^/\x00-\x1f\x7f]{1,128}"))
