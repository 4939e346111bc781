"""What a guest tag is, and how the inventory stores a guest's tags in one column."""

import re
from collections.abc import Iterable

from app.errors import Invalid

TAG = re.compile(r"[a-z0-9_.:-]{1,32}")
MAX_TAGS = 16
RULE = "1 to 32 letters, digits or - _ . :"


def check_tags(tags: Iterable[str]) -> list[str]:
    """The tags in lower case, sorted, each once; Invalid naming the field "tags" for one that
    breaks the rule or for more than MAX_TAGS."""
    found = set()
    for tag in tags:
        tag = tag.strip().lower()
        if not TAG.fullmatch(tag):
            shown = tag if len(tag) <= 40 else tag[:39] + "…"
            raise Invalid(f"tags: '{shown}' is not a tag: use {RULE}", field="tags")
        found.add(tag)
    if len(found) > MAX_TAGS:
        raise Invalid(f"tags: at most {MAX_TAGS} tags a guest, not {len(found)}", field="tags")
    return sorted(found)


def split_tags(text: str) -> list[str]:
    """The tags typed in one field, separated by spaces or commas."""
    return [tag for tag in re.split(r"[\s,]+", text) if tag]


def stored(tags: Iterable[str]) -> str | None:
    """The column's value for the tags a domain's metadata holds: those that are tags, in lower
    case, at most MAX_TAGS of them (another tool may write anything there)."""
    kept = sorted({t.lower() for t in tags if TAG.fullmatch(t.lower())})[:MAX_TAGS]
    return f" {' '.join(kept)} " if kept else None


def listed(column: str | None) -> list[str]:
    """The tags a stored column value holds."""
    return (column or "").split()


def tag_pattern(tag: str) -> str:
    """A LIKE pattern (escape character backslash) matching the column of a guest with the tag."""
    return f"% {tag.replace('_', chr(92) + '_')} %"
