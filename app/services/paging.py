"""Limit and offset checks shared by every paginated list."""

from app.errors import Invalid

MAX_OFFSET = 10**9  # far past any real list, and within what both databases accept


def check_page(*, limit: int, offset: int, max_limit: int) -> None:
    """Invalid naming the field unless 1 <= limit <= max_limit and 0 <= offset <= MAX_OFFSET."""
    if not 1 <= limit <= max_limit:
        raise Invalid(f"limit: must be from 1 to {max_limit}", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise Invalid(f"offset: must be from 0 to {MAX_OFFSET}", field="offset")
