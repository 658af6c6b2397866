"""Where the project keeps its files on the user's machine."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from judge.settings import settings


def user_data_dir() -> Path:
    """`PJUDGE_HOME` if set, else the platform's user data directory for persona-judge."""
    home = settings().home
    return Path(home) if home else Path(platformdirs.user_data_dir("persona-judge", appauthor=False))


def cache_path() -> Path:
    """The call cache: `PJUDGE_CACHE` if set, else `cache.sqlite` in the user data directory."""
    explicit = settings().cache
    return Path(explicit) if explicit else user_data_dir() / "cache.sqlite"
