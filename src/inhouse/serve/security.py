"""Who may call the server, and how much they may send.

Loopback by default; any other address needs an API key. Keys are compared in
constant time. Bodies over the limit are refused by their Content-Length, or
cut off while streaming in when a client sends none.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from http.cookies import SimpleCookie
from urllib.parse import quote
from typing import Any

from inhouse.errors import InvalidInputError
from inhouse.serve.openai import error_body


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


def model_paths_allowed(explicit: bool | None, host: str, api_key: str | None) -> bool:
    """Whether a job may name a folder on this machine by its path. As asked (--allow-model-paths), else
    only when the server trusts its callers as the machine's own user: loopback and no key. A server
    reachable by others must not let them probe or read the server user's files."""
    return explicit if explicit is not None else is_loopback(host) and not api_key


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Access:
    """The secrets of one server: the API key (if any), the browser session and the CSRF token.

    Both tokens derive from the key (or, without one, from a random secret of this process), so a
    session survives nothing but the key itself.
    """

    COOKIE = "inhouse_session"

    def __init__(self, api_key: str | None):
        self.key = (api_key or "").encode()
        secret = self.key or secrets.token_bytes(32)
        self.session = hmac.new(secret, b"session", hashlib.sha256).hexdigest()
        self.csrf = hmac.new(secret, b"csrf", hashlib.sha256).hexdigest()

    def bearer_ok(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and (not self.key or secrets.compare_digest(token.strip(), self.key))

    def cookie_ok(self, headers: dict) -> bool:
        jar = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        value = jar[self.COOKIE].value if self.COOKIE in jar else ""
        return secrets.compare_digest(value.encode(), self.session.encode())

    def csrf_ok(self, headers: dict) -> bool:
        return secrets.compare_digest(headers.get(b"x-csrf-token", b""), self.csrf.encode())


OPEN = ("/health", "/ui/login", "/static/")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class AccessMiddleware:
    """Who may call: with an API key, a valid bearer token or the session cookie the login page sets
    (pages without one go to the login). Cross-site requests: a state-changing request must carry an
    Authorization header (API clients) or the page's CSRF token, which no other site can read."""

    def __init__(self, app: Any, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"].startswith(OPEN):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        bearer = headers.get(b"authorization")
        if bearer is not None and not self.access.bearer_ok(bearer):
            return await send_json(send, 401, error_body("Incorrect API key provided.", code="invalid_api_key"),
                                   [(b"www-authenticate", b"Bearer")])
        if self.access.key and bearer is None and not self.access.cookie_ok(headers):
            return await self._login(scope, send)
        if scope["method"] in UNSAFE and bearer is None and not self.access.csrf_ok(headers):
            return await send_json(send, 403, error_body("Missing or invalid CSRF token (send the page's "
                                                         "X-CSRF-Token, or an Authorization header).",
                                                         code="csrf_failed"))
        return await self.app(scope, receive, send)

    async def _login(self, scope: dict, send: Any) -> None:
        if scope["path"].startswith("/ui") and scope["method"] == "GET":
            target = quote(scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else ""))
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", f"/ui/login?next={target}".encode()), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})
        await send_json(send, 401, error_body("You didn't provide an API key (Authorization: Bearer KEY).",
                                              code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a request body over the limit, declared or actual: `limit` bytes for JSON requests,
    `upload_limit` (plus room for the multipart framing) for file and document uploads."""

    def __init__(self, app: Any, limit: int, upload_limit: int | None = None):
        self.app, self.json_limit, self.upload_limit = app, limit, upload_limit or limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"] == "/v1/files" or scope["path"].endswith("/documents")
        limit = self.upload_limit + 2**20 if upload else self.json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await send_json(send, 413, too_large(limit))
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await send_json(send, 413, too_large(limit))


def too_large(limit: int) -> dict:
    return error_body(f"The request body is larger than this server accepts ({limit // 2**20} MiB; "
                      "see --max-body-mb and --max-file-mb).", code="request_too_large")
