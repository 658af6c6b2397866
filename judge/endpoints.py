"""Which endpoint a provider calls, with which key: the one home of the credential policy.

A base URL is parsed once (`parse_endpoint`: http or https, a host, no userinfo, no query) and
compared by its parsed parts (scheme, host, port, path), never by prefix. Two policies decide a
provider's `Access` before it is built:

- `local_access` (the CLI, `pjudge judge`): the user at the terminal is the operator; the profile's
  base_url and api_key_env are theirs, keys come from their environment, as always.
- `service_access` (the workers): an endpoint the operator configured for the provider
  (`operator_endpoints`) is trusted (no address checks, its errors shown, the server's prices), but
  a server key goes only where the operator bound that very variable for that provider
  (`bound_variables`): OPENAI_API_KEY to openai's default and OPENAI_BASE_URL, ANTHROPIC_API_KEY to
  anthropic's default and ANTHROPIC_BASE_URL, and what `provider=URL` / `provider=URL|VAR` entries
  of PJUDGE_ENDPOINTS bind. An unprefixed entry and PJUDGE_BASE_URL get no server key. Any other
  endpoint is client-chosen: it gets the tenant's own stored credential or no key at all, its
  addresses are checked at connect time (judge/providers/guard.py), and its error bodies are never
  echoed back.

`check_client_host` is the same address rule at POST time (the API's 422); it is checked again on
the resolved address at call time, so DNS rebinding gains nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from judge.profiles import JudgeProfile
    from judge.settings import Settings

PROVIDER_DEFAULTS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
# The environment variable the provider's SDK would read, and its operator-set base URL.
SERVER_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "openai-compatible": "OPENAI_API_KEY",
                        "anthropic": "ANTHROPIC_API_KEY"}
BASE_URL_VARIABLES = {"openai": ("OPENAI_BASE_URL",), "anthropic": ("ANTHROPIC_BASE_URL",),
                      "openai-compatible": ("PJUDGE_BASE_URL", "OPENAI_BASE_URL")}
ENDPOINT_PROVIDERS = ("openai", "anthropic", "openai-compatible")
DEFAULT_PORTS = {"http": 80, "https": 443}
NO_KEY = "no-key"  # what the SDKs get when no key may be sent (they insist on one)

# Cloud instance metadata services: refused for client-chosen endpoints even where the operator
# allows private addresses (no LLM server lives there; their answers are credentials).
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com"})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200"))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # well-known, local-use
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d, still routed by some stacks
# A fixed server-side salt: the credential fingerprint in cache keys is never the key itself.
_FINGERPRINT_SALT = b"persona-judge call cache credential fingerprint v1"


class EndpointError(ValueError):
    """A base URL that may not be used; the message is safe to show to the client."""


@dataclass(frozen=True, order=True)
class Endpoint:
    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int
    path: str  # without trailing slashes ("" for the root)

    @property
    def url(self) -> str:
        """The normalized base URL (what providers are given, so that the URL compared is the URL called)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"

    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_endpoint(url: object) -> Endpoint:
    """A base URL's parts; EndpointError for anything but http(s)://host[:port][/path]."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise EndpointError("must be an http or https URL")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise EndpointError("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointError("is not a valid URL (host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.lower().startswith(f"{scheme}://"):
        raise EndpointError("must be an http or https URL")
    if "@" in parts.netloc:
        raise EndpointError("must not contain a user name or password")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise EndpointError("must not have a query or fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointError("must name a host")
    if port == 0:
        raise EndpointError("port 0 cannot be called")
    try:
        host.encode("idna")
    except UnicodeError:
        raise EndpointError("host is not a valid domain name") from None
    return Endpoint(scheme, host.lower(), port if port is not None else DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


def _try_parse(url: str | None) -> Endpoint | None:
    try:
        return parse_endpoint(url) if url else None
    except EndpointError:
        return None


def _variable(name: str, config: Settings) -> str | None:
    """A base URL variable's value: the project's own through its settings, the SDKs' from the environment."""
    if name == "PJUDGE_BASE_URL":
        return config.base_url
    return os.environ.get(name)


def default_endpoint(provider: str, config: Settings) -> Endpoint | None:
    """Where a profile without base_url goes: the operator's base URL variable, else the provider's default."""
    for variable in BASE_URL_VARIABLES.get(provider, ()):
        value = _variable(variable, config)
        if value:
            return _try_parse(value)
    return _try_parse(PROVIDER_DEFAULTS.get(provider))


def _entries(config: Settings) -> list[tuple[str | None, str, str | None]]:
    """PJUDGE_ENDPOINTS (and PJUDGE_API_BASE_URLS) entries as (provider or None, URL, bound variable or None):
    `URL` (every provider, no key), `provider=URL` (that provider, its own key), `provider=URL|VAR`
    (that provider, the key in VAR)."""
    entries: list[tuple[str | None, str, str | None]] = []
    for entry in (*config.endpoints, *config.api_base_urls):
        name, separator, rest = entry.partition("=")
        if separator and name.strip() in ENDPOINT_PROVIDERS:
            provider = name.strip()
            url, bar, variable = rest.partition("|")
            entries.append((provider, url.strip(), variable.strip() if bar else SERVER_KEY_VARIABLES[provider]))
        else:
            entries.append((None, entry.strip(), None))
    return entries


def operator_endpoints(provider: str, config: Settings) -> frozenset[Endpoint]:
    """The endpoints the operator configured for `provider`: its default, its base URL variables,
    and PJUDGE_ENDPOINTS entries (`URL` for every provider, `provider=URL[|VAR]` for one). Being
    one says nothing about keys: see `bound_variables`."""
    urls = [PROVIDER_DEFAULTS.get(provider)]
    urls += [_variable(v, config) for v in BASE_URL_VARIABLES.get(provider, ())]
    urls += [url for name, url, _ in _entries(config) if name in (None, provider)]
    return frozenset(e for e in map(_try_parse, urls) if e is not None)


def bound_variables(provider: str, endpoint: Endpoint | None, config: Settings) -> tuple[str, ...]:
    """The server-key variables the operator bound to `endpoint` for `provider`, first the default:
    OPENAI_API_KEY to provider openai at https://api.openai.com/v1 and OPENAI_BASE_URL,
    ANTHROPIC_API_KEY to provider anthropic at https://api.anthropic.com and ANTHROPIC_BASE_URL, and
    what each `provider=URL[|VAR]` entry binds. An unprefixed entry and PJUDGE_BASE_URL bind none."""
    if endpoint is None:
        return ()
    bindings: list[tuple[str | None, str]] = []
    if provider in PROVIDER_DEFAULTS:  # the SDK's own pairing of key and base URL
        for url in (PROVIDER_DEFAULTS[provider], *(_variable(v, config) for v in BASE_URL_VARIABLES[provider])):
            bindings.append((url, SERVER_KEY_VARIABLES[provider]))
    bindings += [(url, variable) for name, url, variable in _entries(config) if name == provider and variable]
    found: list[str] = []
    for url, variable in bindings:
        if variable not in found and _try_parse(url) == endpoint:
            found.append(variable)
    return tuple(found)


# ---------------------------------------------------------------- addresses

def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why a client-chosen endpoint may not connect to `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and (any(address in prefix for prefix in _NAT64)
                                 or (address in _IPV4_COMPATIBLE and int(address) > 1)):  # not :: or ::1
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded, allow_private)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for kind, test in (("a loopback", address.is_loopback), ("an unspecified", address.is_unspecified),
                       ("a link-local", address.is_link_local), ("a multicast", address.is_multicast),
                       ("a private", address.is_private), ("a reserved", address.is_reserved)):
        if test:
            return f"{kind} address"
    if not address.is_global:
        return "not a public address"
    return None


def check_client_host(endpoint: Endpoint, allow_private: bool) -> None:
    """Refuse a client-chosen endpoint whose host is, or resolves to, an address it may not reach."""
    client_addresses(endpoint, allow_private)


def client_addresses(endpoint: Endpoint, allow_private: bool) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a client-chosen endpoint's host is, or resolves to now, when it may reach
    every one of them (what a caller that connects itself pins, so a second lookup cannot
    rebind it); EndpointError otherwise."""
    if endpoint.host in METADATA_HOSTS:
        raise EndpointError("names a cloud metadata service")
    literal = endpoint.ip()
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            raise EndpointError("host cannot be resolved") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        reason = address_problem(address, allow_private)
        if reason is not None:
            raise EndpointError(f"host is {reason}; this server does not call such addresses")
    return addresses


# ---------------------------------------------------------------- access

@dataclass(frozen=True)
class Access:
    """What a provider may use: the endpoint it calls (None: a provider without one, e.g. replay),
    the key it sends (None: none), whether the operator configured that endpoint (its errors may be
    shown; no address checks), and whether a client-chosen one may reach private addresses."""

    endpoint: Endpoint | None
    api_key: str | None
    operator: bool = True
    allow_private: bool = False
    server_key: bool = False  # the key is the server's own (not a tenant's)
    # The variable the key comes from ("set it" when it is empty), and whether the SDK may add
    # what its own environment says (OPENAI_ORG_ID, ANTHROPIC_AUTH_TOKEN...): only with its own
    # key variable at an endpoint bound to it (or in the CLI, where everything is the user's).
    key_variable: str | None = None
    sdk_env: bool = False

    @property
    def base_url(self) -> str | None:
        return self.endpoint.url if self.endpoint is not None else None

    @property
    def cache_scope(self) -> str:
        """The endpoint and a fingerprint of the key: answers of one never answer for another."""
        return f"{self.base_url or ''}|{credential_fingerprint(self.api_key)}"

    def __repr__(self) -> str:  # never the key
        return f"Access(endpoint={self.base_url!r}, operator={self.operator}, server_key={self.server_key})"


def credential_fingerprint(api_key: str | None) -> str:
    """HMAC-SHA256 of the key under a fixed salt, truncated: tells keys apart, never reveals one."""
    if not api_key:
        return "-"
    return hmac.new(_FINGERPRINT_SALT, api_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class AccessError(ValueError):
    """A profile that cannot be given an endpoint or key; the message is safe to store."""


def _endpoint_of(profile: JudgeProfile, config: Settings) -> Endpoint | None:
    if profile.base_url:
        try:
            return parse_endpoint(profile.base_url)
        except EndpointError as exc:
            raise AccessError(f"base_url {exc}") from None
    endpoint = default_endpoint(profile.provider, config)
    if endpoint is None and profile.provider == "openai-compatible":
        raise AccessError("provider 'openai-compatible' needs a base URL: set base_url in the profile, "
                          "--base-url, or PJUDGE_BASE_URL / OPENAI_BASE_URL")
    return endpoint


def local_access(profile: JudgeProfile, config: Settings | None = None) -> Access:
    """The CLI's access: every endpoint is the user's own, keys from their environment."""
    from judge.settings import settings

    config = config or settings()
    if profile.credential:
        raise AccessError("credential names a key stored in the service; locally, use api_key_env")
    if profile.provider not in SERVER_KEY_VARIABLES:
        return Access(endpoint=_try_parse(profile.base_url), api_key=None)
    endpoint = _endpoint_of(profile, config)
    key = os.environ.get(profile.api_key_env) if profile.api_key_env else None
    key = key or os.environ.get(SERVER_KEY_VARIABLES[profile.provider])
    return Access(endpoint=endpoint, api_key=key or None, server_key=bool(key),
                  key_variable=profile.api_key_env or SERVER_KEY_VARIABLES[profile.provider], sdk_env=True)


def service_access(profile: JudgeProfile, config: Settings, credential_key: str | None = None) -> Access:
    """A worker's access for a tenant's job: a server key only at an endpoint the operator bound it
    to for the profile's provider (`bound_variables`); the tenant's own key (`credential_key`)
    anywhere; else no key (an operator endpoint without a bound key is called without one)."""
    if profile.provider not in SERVER_KEY_VARIABLES:
        if profile.base_url or credential_key:
            raise AccessError(f"provider '{profile.provider}' takes no endpoint or credential in the service")
        return Access(endpoint=None, api_key=None)
    endpoint = _endpoint_of(profile, config)
    operator = endpoint is not None and endpoint in operator_endpoints(profile.provider, config)
    keyless = Access(endpoint=endpoint, api_key=None, operator=operator,
                     allow_private=config.allow_private_endpoints)
    if credential_key is not None:
        if profile.api_key_env:
            raise AccessError("give credential or api_key_env, not both")
        return replace(keyless, api_key=credential_key)
    bound = bound_variables(profile.provider, endpoint, config)
    if profile.api_key_env:
        if profile.api_key_env not in config.api_key_envs:
            raise AccessError(f"api_key_env '{profile.api_key_env}' is not allowed by this server")
        if profile.api_key_env not in bound:
            raise AccessError(f"api_key_env '{profile.api_key_env}' is not bound to this endpoint by the operator")
        variable: str | None = profile.api_key_env
    else:
        variable = bound[0] if bound else None
    if variable is None:
        return keyless
    key = os.environ.get(variable) or None
    return replace(keyless, api_key=key, server_key=key is not None, key_variable=variable,
                   sdk_env=variable == SERVER_KEY_VARIABLES[profile.provider])
