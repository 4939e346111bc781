"""What htmx sends and reads, for page tests: its request headers, the toast an answer asks for."""

import json

import httpx

# The header htmx adds to each request it makes.
HTMX = {"HX-Request": "true"}


def htmx_to(target: str) -> dict[str, str]:
    """The headers of an htmx request that swaps the element with this id."""
    return {**HTMX, "HX-Target": target}


def toast(response: httpx.Response) -> str:
    """The message of the toast an htmx answer asks the page to show."""
    return json.loads(response.headers["HX-Trigger"])["toast"]["message"]
