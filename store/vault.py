"""Encryption at rest of the tenants' provider keys: Fernet (AES-128-CBC + HMAC-SHA256) from the
`cryptography` package, under the server secret PJUDGE_SECRET_KEY, or, when it is unset, a key
file generated once in the user data directory with mode 0600. The API (which encrypts) and the
workers (which decrypt) must share it: on several machines, set PJUDGE_SECRET_KEY on all of them."""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from judge.paths import user_data_dir
from judge.settings import settings

KEY_FILE = "secret.key"


class VaultError(Exception):
    """A value that cannot be decrypted (another server secret, or altered); names nothing secret."""


def _key_from_secret(secret: str) -> bytes:
    try:
        if len(base64.urlsafe_b64decode(secret.encode("ascii"))) == 32:
            return secret.encode("ascii")  # already a Fernet key
    except (ValueError, UnicodeEncodeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode("utf-8")).digest())


def _key_file(path: Path) -> bytes:
    """The key in `path`, made first if missing (O_EXCL: two processes starting at once agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    key = path.read_bytes().strip()
    if not key:  # another process is between creating and writing it
        import time

        time.sleep(0.2)
        key = path.read_bytes().strip()
    return key


@lru_cache(maxsize=4)
def _fernet(key: bytes) -> Fernet:
    return Fernet(key)


def box() -> Fernet:
    secret = settings().secret_key
    key = _key_from_secret(secret.get_secret_value()) if secret is not None else _key_file(user_data_dir() / KEY_FILE)
    return _fernet(key)


def encrypt(text: str) -> str:
    return box().encrypt(text.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return box().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        raise VaultError("a stored credential cannot be decrypted with this server's secret") from None
