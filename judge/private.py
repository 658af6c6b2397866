"""Files and folders the service creates hold job data and secrets: owner-only (0600 files, 0700
folders), whatever the process's umask. Files it opens again get the same modes, so a data
directory made by an older version is tightened on the next start. SQLite creates its -wal and
-shm files with the database file's mode, so a database made 0600 first keeps them 0600."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError:  # noqa: S110 - not ours (another user's file or folder): leave it as it is
        pass


def private_dir(path: Path, existing: bool = True) -> Path:
    """The folder, made 0700 (and its missing parents with the default mode). `existing`: tighten
    it when it exists already too (the service's own folders; not a folder a user named)."""
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if made or existing:
        _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """The file, created empty with mode 0600 when missing, else made 0600."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE))
    except OSError:  # noqa: S110 - cannot create it here; the opener reports why
        return path
    _chmod(path, FILE_MODE)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file and its companions 0600 (its folder 0700 if it is made here)."""
    private_dir(path.parent, existing=False)
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _chmod(companion, FILE_MODE)
    return path


def private_tree(folder: Path) -> None:
    """Every file under the folder 0600 and every folder 0700 (a server's data folder)."""
    private_dir(folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            _chmod(Path(root) / name, DIR_MODE)
        for name in files:
            _chmod(Path(root) / name, FILE_MODE)


@contextmanager
def private_umask() -> Iterator[None]:
    """umask 077 for the block: what a child process started in it creates is owner-only. The
    umask is the process's: other threads' new files meanwhile are owner-only too (never looser)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
