"""judge/endpoints.py: base URLs compared by their parsed parts, and which addresses a
client-chosen endpoint may reach (the same rule at POST and per connection)."""

from __future__ import annotations

import ipaddress

import pytest

from judge.endpoints import (
    EndpointError,
    address_problem,
    credential_fingerprint,
    operator_endpoints,
    parse_endpoint,
)
from judge.settings import Settings


def test_equal_endpoints_are_equal_however_they_are_written() -> None:
    same = ["https://api.example.com/v1", "HTTPS://API.Example.com:443/v1/", "https://api.example.com./v1//"]
    assert len({parse_endpoint(url) for url in same}) == 1
    assert parse_endpoint(same[1]).url == "https://api.example.com/v1"
    different = ["http://api.example.com/v1", "https://api.example.com:8443/v1", "https://api.example.com/v2",
                 "https://api.example.com.evil/v1", "https://api.example.com/v1.evil"]
    assert parse_endpoint(same[0]) not in {parse_endpoint(url) for url in different}


@pytest.mark.parametrize("url", ["", "api.example.com/v1", "javascript:alert(1)", "file:///etc/passwd",
                                 "http://user@example.com/", "http://u:p@example.com/", "http://example.com:x/",
                                 "http://127.0.0.1:18901.nip.io/v1", "http://example.com/v1?x=1", "http:///v1",
                                 "http://exa mple.com/", "http://example.com\\@evil.com/", "http://example.com:0/"])
def test_anything_but_a_plain_http_base_url_is_refused(url: str) -> None:
    with pytest.raises(EndpointError):
        parse_endpoint(url)


@pytest.mark.parametrize("address,refused", [
    ("8.8.8.8", False), ("2001:4860:4860::8888", False), ("127.0.0.1", True), ("10.1.2.3", True),
    ("172.16.0.1", True), ("192.168.1.1", True), ("100.64.0.1", True), ("169.254.169.254", True),
    ("0.0.0.0", True), ("224.0.0.1", True), ("240.0.0.1", True), ("::1", True), ("fe80::1", True),
    ("fd00:ec2::254", True), ("::", True), ("ff02::1", True), ("::ffff:127.0.0.1", True),
    ("64:ff9b::a9fe:a9fe", True), ("2002:7f00:1::", True), ("::ffff:8.8.8.8", False),
    ("::7f00:1", True), ("64:ff9b:1::a00:1", True), ("64:ff9b:1::808:808", False),
])
def test_only_public_addresses_are_reachable_by_default(address: str, refused: bool) -> None:
    assert (address_problem(ipaddress.ip_address(address), allow_private=False) is not None) == refused


def test_allowing_private_addresses_still_refuses_cloud_metadata() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "fe80::1"):
        assert address_problem(ipaddress.ip_address(address), allow_private=True) is None
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "100.100.100.200",
                    "::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "64:ff9b::a9fe:a9fe"):  # IPv4-compatible, NAT64 /48 and /96
        assert address_problem(ipaddress.ip_address(address), allow_private=True) is not None
    assert address_problem(ipaddress.ip_address("::1"), allow_private=True) is None  # loopback, not 0.0.0.1


def test_operator_endpoints_are_per_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.internal:8080/v1")
    config = Settings(endpoints=("anthropic=https://claude.internal", "http://vllm.internal/v1"),
                      base_url="http://local:8000/v1")
    urls = {p: {e.url for e in operator_endpoints(p, config)} for p in ("openai", "anthropic", "openai-compatible")}
    assert urls["openai"] == {"https://api.openai.com/v1", "http://proxy.internal:8080/v1", "http://vllm.internal/v1"}
    assert urls["anthropic"] == {"https://api.anthropic.com", "https://claude.internal", "http://vllm.internal/v1"}
    assert urls["openai-compatible"] == {"http://local:8000/v1", "http://proxy.internal:8080/v1",
                                         "http://vllm.internal/v1"}


def test_a_credential_fingerprint_tells_keys_apart_without_showing_them() -> None:
    first, second = credential_fingerprint("sk-one-0123456789"), credential_fingerprint("sk-two-0123456789")
    assert first != second and "sk-one" not in first and credential_fingerprint(None) == "-"


def test_a_server_key_is_bound_only_by_its_providers_own_variables_and_prefixed_entries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.endpoints import bound_variables

    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.internal:8080/v1")
    config = Settings(endpoints=("anthropic=https://claude.internal", "http://vllm.internal/v1",
                                 "openai-compatible=http://gemini.example/v1|GOOGLE_API_KEY"),
                      base_url="http://local:8000/v1")

    def bound(provider: str, url: str) -> tuple[str, ...]:
        return bound_variables(provider, parse_endpoint(url), config)

    assert bound("openai", "https://api.openai.com/v1") == bound("openai", "http://proxy.internal:8080/v1") == (
        "OPENAI_API_KEY",)
    assert bound("openai-compatible", "http://proxy.internal:8080/v1") == ()
    assert bound("anthropic", "https://claude.internal") == ("ANTHROPIC_API_KEY",)
    assert bound("openai", "https://claude.internal") == ()
    for provider in ("openai", "anthropic", "openai-compatible"):
        assert bound(provider, "http://vllm.internal/v1") == () and bound(provider, "http://local:8000/v1") == ()
    assert bound("openai-compatible", "http://gemini.example/v1") == ("GOOGLE_API_KEY",)
    assert bound("openai", "http://gemini.example/v1") == ()
