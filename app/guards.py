"""Pure ASGI middleware around every request: the request body limit and the security headers."""

from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import VirtdeckError

# No inline script or style anywhere (templates, htmx's config, the /docs page), no plugins, no
# framing, forms and requests to this origin only. Swagger UI draws icons from data: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Sent only on requests that came over TLS (directly, or through a trusted proxy's
# X-Forwarded-Proto): a browser then refuses plain HTTP to this host for a year.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"


class BodyTooLarge(VirtdeckError):
    """The request body is over the limit."""

    status_code = 413


def _never(_method: str, _path: str) -> bool:
    """No request streams its body past the limit."""
    return False


class BodyLimit:
    """413 for a request body over `limit` bytes before the app reads any of it: at once when
    its Content-Length says so; a body without one (chunked) is read up to the limit first and
    handed on only if it ends within it. Nothing over the limit is ever held in memory.

    Requests for which `streamed(method, path)` is true pass untouched: their route streams the
    body and holds it to a limit of its own (image uploads)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        render: Callable[[Request, VirtdeckError], Response],
        streamed: Callable[[str, str], bool] = _never,
    ) -> None:
        self.app = app
        self.limit = limit
        self.render = render
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.streamed(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit():  # the server stops the body at it
            if int(length) > self.limit:
                await self._refuse(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                first: Message | None = message
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(parts), "more_body": False}
                break

        async def replay() -> Message:
            nonlocal first
            if first is None:
                return await receive()
            message, first = first, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(f"request body: larger than the limit of {self.limit} bytes")
        response = self.render(Request(scope, receive), error)
        await response(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers to every HTTP response (HSTS only to requests over TLS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if over_tls:
                    headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
            await send(message)

        await self.app(scope, receive, send_with_headers)
