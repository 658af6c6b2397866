"""A job's provider access in the service (judge.endpoints.service_access with the owner's stored
credential) and whose call-cache entries it reads and writes (its tenant)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from judge.endpoints import Access, AccessError, service_access
from judge.profiles import JudgeProfile
from judge.settings import settings
from store import credentials
from store.models import Job
from store.vault import VaultError


def job_access(engine: Engine, job: Job, profile: JudgeProfile) -> tuple[Access, str]:
    """(access, cache tenant). The tenant is the job's owner, unless the operator lets API keys share
    what the server's own keys at its own endpoints answered (PJUDGE_SHARED_CACHE). AccessError:
    the job cannot be run as stored (a deleted credential, a variable no longer allowed)."""
    config = settings()
    credential_key = None
    if profile.credential:
        try:
            found = credentials.key_of(engine, job.owner, profile.credential)
        except VaultError as exc:
            raise AccessError(str(exc)) from None
        if found is None:
            raise AccessError(f"credential '{profile.credential}' no longer exists")
        provider, credential_key = found
        if provider != profile.provider:
            raise AccessError(f"credential '{profile.credential}' is for provider '{provider}'")
    access = service_access(profile, config, credential_key)
    shared = config.shared_cache and access.operator and access.server_key
    return access, "" if shared else job.owner
