"""Bearer keys. A key is known by its SHA-256 only: the `api_keys` table (created by `pjudge keys
create`, revocable) or the PJUDGE_API_KEYS list read at start. The owner of a job is the hash of the
key that created it, so a key sees only its own jobs. The key itself is never logged or echoed."""

from __future__ import annotations

import hmac

from flask import g, request

from api.context import state
from api.errors import ApiError, problem
from api.throttle import AuthThrottle
from store import repo

MAX_KEY_LENGTH = 512
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pjudge"'}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, [problem("Authorization", message)], headers=_CHALLENGE)


def key_of_header(header: str | None) -> str | None:
    """The key of an Authorization header `Bearer <key>` (None: another scheme, or no key): the one
    reading of the header, for requests and for `pjudge serve`'s checks when headers arrive."""
    scheme, _, key = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def bearer_key() -> str | None:
    return key_of_header(request.headers.get("Authorization"))


def _known_good(throttle: AuthThrottle) -> str | None:
    """The hash of the request's key when it is known to be good without a database lookup (a key
    of PJUDGE_API_KEYS, or one that authenticated recently), else None."""
    key = bearer_key()
    if key is None or len(key) > MAX_KEY_LENGTH:
        return None
    digest = repo.hash_key(key)
    listed = any(hmac.compare_digest(digest, known) for known in state().settings.env_key_hashes)
    return digest if listed or throttle.known(digest) else None


def authenticate() -> str:
    """The caller's owner id (the key's hash); raises 401 for a missing, unknown or revoked key, and
    429 once the client address has failed too often (api.throttle), unless the key is known to
    be good (others' failures from a shared address do not lock a valid key out)."""
    throttle = state().throttle
    address = request.remote_addr or ""
    wait = throttle.retry_after(address)
    known = _known_good(throttle) if wait is not None else None
    if wait is not None and known is None:
        raise ApiError(429, "too_many_requests",
                       f"too many failed authentications from this address; retry in {wait} s",
                       [problem("Authorization", "failed too often: wait before trying again")],
                       headers={"Retry-After": str(wait)})
    try:
        owner = _check_key()
    except ApiError:
        throttle.failed(address)
        if known is not None:
            throttle.forget(known)  # revoked since
        raise
    throttle.succeeded(owner)
    return owner


def _check_key() -> str:
    key = bearer_key()
    if key is None:
        raise _unauthorized("missing bearer key: send 'Authorization: Bearer <key>'")
    owner = owner_of_key(key)
    g.owner = owner
    return owner


def owner_of_key(key: str) -> str:
    """The owner id (hash) of an accepted key; 401 for a malformed, unknown or revoked one."""
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise _unauthorized("invalid key")
    owner = repo.hash_key(key)
    if owner_is_active(owner):
        return owner
    raise _unauthorized("invalid or revoked key")


def owner_is_active(owner: str) -> bool:
    """Whether the key hashing to `owner` is accepted now (listed in PJUDGE_API_KEYS, or created and
    not revoked): /dashboard's sessions keep the hash and check it on every request."""
    # compare_digest over the hashes: no timing signal about how much of a listed key matched.
    if any(hmac.compare_digest(owner, known) for known in state().settings.env_key_hashes):
        return True
    return repo.key_is_active(state().engine, owner)


def current_owner() -> str:
    owner = g.get("owner")
    return owner if owner is not None else authenticate()
