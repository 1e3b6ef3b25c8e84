"""HTTP Basic Authentication (RFC 7617) during the opening handshake.

Two forms:

* the decorator of the spec, checking one username and password::

      @basic_auth("admin", "secret123")
      async def handler(websocket): ...

  The handler only runs after the handshake, so the decorator marks it
  (``__shardws_auth__``) and :func:`shardws.serve` runs the check before the
  upgrade: without valid credentials the client gets 401 and the handler
  never runs.

* the keyword form of current websockets, a ``process_request`` hook::

      serve(handler, ..., process_request=basic_auth(
          realm="api", credentials=[("alice", "pw"), ...]))  # or check_credentials=f

Either way the client gets ``401 Unauthorized`` with
``WWW-Authenticate: Basic realm="...", charset="UTF-8"`` when the
``Authorization`` header is missing, malformed, repeated, or wrong, and the
handler reads the authenticated name in ``connection.username``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..protocol.handshake import reject
from ..protocol.headers import MultipleValuesError
from ..protocol.http11 import Request, Response

__all__ = ["basic_auth", "parse_authorization_basic", "build_www_authenticate_basic"]

ProcessRequest = Callable[[Any, Request], Awaitable[Response | None]]


def build_www_authenticate_basic(realm: str) -> str:
    """The ``WWW-Authenticate`` value asking for Basic credentials in UTF-8.

    RFC 7617 section 2.1: the "charset" auth-param "The only allowed value
    is "UTF-8"".
    """
    escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{escaped}", charset="UTF-8"'


def parse_authorization_basic(value: str) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization: Basic ...`` value; None if malformed.

    RFC 7617 section 2: "the user-id and password are separated by a
    single colon (":") character"; "the user-id ... MUST NOT contain a
    colon", so the first colon splits.
    """
    scheme, _, token = value.strip().partition(" ")
    # RFC 7235 section 2.1: the auth-scheme is case-insensitive.
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip().encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return username, password


def _unauthorized(realm: str, text: str) -> Response:
    return reject(401, text, {"WWW-Authenticate": build_www_authenticate_basic(realm)})


def _checker_for(credentials: tuple[str, str] | Iterable[tuple[str, str]]) -> Callable[[str, str], bool]:
    if isinstance(credentials, tuple) and len(credentials) == 2 and isinstance(credentials[0], str):
        table = {credentials[0]: credentials[1]}
    else:
        table = {}
        for item in credentials:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"invalid credentials argument: {credentials!r}")
            table[item[0]] = item[1]

    def check(username: str, password: str) -> bool:
        expected = table.get(username)
        if expected is None:
            return False
        # Constant-time comparison: no timing oracle on the password.
        return hmac.compare_digest(password.encode(), expected.encode())

    return check


def _process_request(realm: str, check: Callable[[str, str], Any]) -> ProcessRequest:
    async def process_request(connection: Any, request: Request) -> Response | None:
        try:
            authorization = request.headers["Authorization"]
        except KeyError:
            return _unauthorized(realm, "Missing credentials\n")
        except MultipleValuesError:
            return _unauthorized(realm, "Too many credentials\n")
        parsed = parse_authorization_basic(authorization)
        if parsed is None:
            return _unauthorized(realm, "Unsupported credentials\n")
        username, password = parsed
        valid = check(username, password)
        if inspect.isawaitable(valid):
            valid = await valid
        if not valid:
            return _unauthorized(realm, "Invalid credentials\n")
        connection.username = username
        return None

    return process_request


def basic_auth(
    username: str | None = None,
    password: str | None = None,
    realm: str = "WebSocket",
    *,
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: Callable[[str, str], bool | Awaitable[bool]] | None = None,
) -> Any:
    """HTTP Basic Authentication for :func:`shardws.serve`.

    ``basic_auth(username, password, realm="WebSocket")`` returns a handler
    decorator (the spec's form). ``basic_auth(realm=..., credentials=...)``
    or ``basic_auth(realm=..., check_credentials=...)`` returns a
    ``process_request`` hook (websockets' form); ``credentials`` is one
    ``(username, password)`` pair or an iterable of them;
    ``check_credentials(username, password)`` returns a bool or an
    awaitable of one.

    Raises:
        TypeError: the arguments mix the forms or give neither.
    """
    if username is not None:
        if password is None or credentials is not None or check_credentials is not None:
            raise TypeError("basic_auth(username, password, realm) takes no other credentials")
        hook = _process_request(realm, _checker_for((username, password)))

        def decorate(handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
            @functools.wraps(handler)
            async def authenticated_handler(connection: Any) -> None:
                await handler(connection)

            authenticated_handler.__shardws_auth__ = hook  # type: ignore[attr-defined]
            return authenticated_handler

        return decorate

    if (credentials is None) == (check_credentials is None):
        raise TypeError("provide either credentials or check_credentials")
    if credentials is not None:
        return _process_request(realm, _checker_for(credentials))
    assert check_credentials is not None
    return _process_request(realm, check_credentials)
