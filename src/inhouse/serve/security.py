"""Who may call the server, and how much they may send.

Loopback by default; any other address needs an API key. Keys are compared in
constant time. Bodies over the limit are refused by their Content-Length, or
cut off while streaming in when a client sends none.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from typing import Any

from inhouse.errors import InvalidInputError
from inhouse.serve.openai import error_body

OPEN_PATHS = ("/health",)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise InvalidInputError(f"--host {host} is reachable from other machines: set --api-key (or INHOUSE_API_KEY) "
                                "so that only your clients can use the server, or bind 127.0.0.1")


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class ApiKeyMiddleware:
    """`Authorization: Bearer KEY` on every path but the probes, when a key is set."""

    def __init__(self, app: Any, api_key: str | None):
        self.app, self.key = app, (api_key or "").encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.key or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        message = "Incorrect API key provided." if given else "You didn't provide an API key (Authorization: Bearer KEY)."
        await send_json(send, 401, error_body(message, code="invalid_api_key"),
                        [(b"www-authenticate", b"Bearer")])


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a request body over the limit, declared or actual: `limit` bytes for JSON requests,
    `upload_limit` (plus room for the multipart framing) for file uploads."""

    def __init__(self, app: Any, limit: int, upload_limit: int | None = None):
        self.app, self.json_limit, self.upload_limit = app, limit, upload_limit or limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.limit = self.upload_limit + 2**20 if scope["path"] == "/v1/files" else self.json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_json(send, 413, self.error())
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await send_json(send, 413, self.error())

    def error(self) -> dict:
        return error_body(f"The request body is larger than this server accepts ({self.limit // 2**20} MiB; "
                          "see --max-body-mb).", code="request_too_large")
