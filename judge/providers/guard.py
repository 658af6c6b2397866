"""The call-time half of the endpoint policy (judge/endpoints.py) for client-chosen endpoints.

- Every socket is checked on the address it is about to connect to (aiohttp's `socket_factory`
  receives the resolved address): a host that resolved to a public address at POST and to
  169.254.169.254 now (DNS rebinding), a redirect to an internal host, an IP literal: all refused
  before a byte is sent. Used by the direct transport's connector and, through the SDKs' own
  aiohttp transport, by the SDK transport.
- On the SDK transport, only the headers a judge call needs leave: an SDK adds what its
  environment variables say (organization ids, ANTHROPIC_CUSTOM_HEADERS, ANTHROPIC_AUTH_TOKEN...),
  and none of that may reach a host the operator did not bind the SDK's own key to (a
  client-chosen endpoint, or an operator endpoint without that key). Authorization / x-api-key
  pass only with the key the policy chose (the tenant's own, a bound one, or a placeholder).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from judge.endpoints import NO_KEY, Access, address_problem

if TYPE_CHECKING:  # aiohttp is imported when a client is made, not with this module
    import aiohttp
    from aiohttp.connector import AddrInfoType

    from judge.providers.base import ResponseHook

SAFE_HEADERS = frozenset({"accept", "accept-encoding", "content-type", "content-length", "user-agent", "host",
                          "connection", "transfer-encoding", "anthropic-version", "idempotency-key",
                          "x-pjudge-sample"})


class AddressRefused(OSError):
    """A connection to an address a client-chosen endpoint may not reach (its text names no address)."""


REFUSED = "address refused for a client-chosen endpoint"


def refused(exc: BaseException) -> bool:
    """Whether a connection error came from refused addresses only (no retry can help). With
    several addresses aiohappyeyeballs joins their errors into one OSError's text."""
    error = getattr(exc, "os_error", exc)
    if isinstance(error, AddressRefused):
        return True
    text = str(error)  # "Multiple exceptions: <one>, <other>" when every address failed
    return REFUSED in text and "Connect call failed" not in text


def socket_factory(allow_private: bool) -> Callable[[AddrInfoType], socket.socket]:
    """An aiohttp `socket_factory` that refuses addresses judge.endpoints.address_problem names."""

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        try:
            ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except ValueError:
            raise AddressRefused("not an IP address") from None
        if address_problem(ip, allow_private) is not None:
            raise AddressRefused(REFUSED)
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def connector(access: Access, **options: Any) -> aiohttp.TCPConnector:
    """An aiohttp TCPConnector; for a client-chosen endpoint, one that checks every address."""
    import aiohttp

    if not access.operator:
        options["socket_factory"] = socket_factory(access.allow_private)
    return aiohttp.TCPConnector(**options)


def _allowed(name: str, value: str, key: str) -> bool:
    name = name.lower()
    if name in SAFE_HEADERS or name.startswith("x-stainless-"):
        return True
    if name == "authorization":
        return value == f"Bearer {key}"
    return name == "x-api-key" and value == key


def sdk_http_client(sdk: ModuleType, access: Access, event_hooks: dict[str, list[ResponseHook]] | None = None) -> Any:
    """The SDK's aiohttp http client (`sdk.DefaultAioHttpClient`) with `event_hooks`; unless the
    SDK's own key is bound to this operator endpoint, on a transport which sends only the safe
    headers (and, for a client-chosen endpoint, whose connector checks addresses). Where the SDK's
    own key goes, without the aiohttp extra: the SDK's httpx client."""
    hooks = event_hooks or {}
    if access.operator and access.sdk_env:
        try:
            return sdk.DefaultAioHttpClient(event_hooks=hooks)
        except RuntimeError:  # the aiohttp extra is missing: the SDK's default httpx transport
            return sdk.DefaultAsyncHttpxClient(event_hooks=hooks)
    transport_class = _vendored_transport(sdk)
    key = access.api_key or NO_KEY

    class GuardedTransport(transport_class):  # type: ignore[misc, valid-type]  # a base class found at run time
        async def handle_async_request(self, request: Any) -> Any:
            for name in [n for n, v in request.headers.items() if not _allowed(n, v, key)]:
                del request.headers[name]
            return await super().handle_async_request(request)

    def session() -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(connector=connector(access, limit=1000))

    return sdk.DefaultAioHttpClient(transport=GuardedTransport(client=session), event_hooks=hooks)


def _vendored_transport(sdk: ModuleType) -> Any:
    import importlib

    from judge.providers.base import ProviderError

    try:
        return importlib.import_module(f"{sdk.__name__}._vendor.httpx_aiohttp").AiohttpTransport
    except (ImportError, AttributeError):
        raise ProviderError("a client-chosen endpoint needs the SDK's aiohttp transport (this SDK version has "
                            "none); use transport 'direct'") from None
