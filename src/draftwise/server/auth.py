"""API keys: `Authorization: Bearer KEY` on every endpoint but /health, compared in constant time.

The keys are never logged and never echoed back in an error.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Sequence

from draftwise.errors import DraftwiseError
from draftwise.server.errors import APIError

OPEN_PATHS = frozenset({"/health"})


def parse_keys(given: Sequence[str], env: str | None) -> list[str]:
    """Keys from repeated --api-key options and DRAFTWISE_API_KEY (comma-separated)."""
    keys = [k.strip() for k in given] + [k.strip() for k in (env or "").split(",") if k.strip()]
    if any(not k for k in keys):
        raise DraftwiseError("--api-key must not be empty")
    return list(dict.fromkeys(keys))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, port: int, keys: Sequence[str]) -> str | None:
    """The warning for a server that anyone on the network may use, or None."""
    if keys or is_loopback(host):
        return None
    return (f"serving on {host} without an API key: anyone who can reach port {port} can use it; "
            "pass --api-key or set DRAFTWISE_API_KEY")


def key_ok(header: bytes | None, keys: Sequence[bytes]) -> bool:
    """True if `header` is `Bearer <one of keys>`. Every key is compared, in constant time."""
    if header is None:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    token = token.strip()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(token, k)
    return ok


class ApiKeyAuth:
    """ASGI middleware: requests without a valid key get 401 in OpenAI's error format.
    `reject(path, status)` is told of each refusal (for the metrics)."""

    def __init__(self, app, keys: Sequence[str], reject: Callable[[str, int], None]):
        self.app, self.reject = app, reject
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization")
        if key_ok(header, self.keys):
            return await self.app(scope, receive, send)
        if header is None:
            err = APIError(401, "no API key: send it as `Authorization: Bearer KEY`",
                           code="missing_api_key")
        else:
            err = APIError(401, "incorrect API key", code="invalid_api_key")
        err.headers["WWW-Authenticate"] = "Bearer"
        self.reject(scope["path"], 401)
        await err.response()(scope, receive, send)
