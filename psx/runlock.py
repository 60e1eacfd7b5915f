"""One writer per run folder: an advisory lock file (`.psx.lock`) that every run, resume and
report write takes before it touches the folder.

The lock is fcntl.flock on the file, so the kernel drops it when its owner dies (SIGKILL
included): a dead owner never blocks the next writer. The file holds the owner's pid, host and
what it is doing, for the one line a second writer gets; it is removed on release. A lock that is still held although the
pid in the file is dead on this host (a child process that inherited the open file, e.g. a
tracker's service) is stale: the file is replaced, and the new writer locks the new file.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from psx.errors import PsxError

LOCK_NAME = ".psx.lock"


class FolderInUse(PsxError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_owner(lock_file: Path) -> dict[str, str]:
    """The owner's fields written in the lock file ({} if unreadable or empty)."""
    try:
        text = lock_file.read_text()
    except OSError:
        return {}
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


def _describe(owner: dict[str, str]) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} ({owner.get('what', '?')}, since {owner.get('since', '?')})"


def _stale(owner: dict[str, str]) -> bool:
    """Held, but by no live psx process: its recorded owner is dead on this host."""
    if owner.get("host") != socket.gethostname() or not owner.get("pid", "").isdigit():
        return False
    return not _alive(int(owner["pid"]))


def _try_lock(lock_file: Path) -> int | None:
    """An fd holding the lock on the file now at lock_file, or None if another holds it."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # another writer may have replaced a stale file between our open and our lock
        same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(lock_file)
    return fd


def acquire(folder: Path, what: str) -> int:
    """Lock `folder` for this process (the folder must exist); FolderInUse names the owner. An
    OSError (a read-only or full disk) is the caller's to word, as for any other write."""
    lock_file = Path(folder) / LOCK_NAME
    fd = _try_lock(lock_file)
    if fd is None:
        owner = read_owner(lock_file)
        if not _stale(owner):
            raise FolderInUse(f"{folder} is in use by {_describe(owner)}; wait for it to finish or stop it")
        lock_file.unlink(missing_ok=True)
        fd = _try_lock(lock_file)
        if fd is None:
            raise FolderInUse(f"{folder} is in use by {_describe(read_owner(lock_file))}")
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} what={what} since={since}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def release(fd: int, folder: Path) -> None:
    """Unlock: the file goes first (a writer that opened it meanwhile sees another file at the
    path once it holds the lock, and tries again), so a folder at rest has no lock file."""
    try:
        (Path(folder) / LOCK_NAME).unlink(missing_ok=True)
    except OSError:  # e.g. the disk went read-only: closing still releases the lock
        pass
    os.close(fd)


@contextmanager
def folder_lock(folder: Path | str, what: str) -> Iterator[None]:
    """`with folder_lock(run_dir, "train"):` this process is the folder's only psx writer."""
    fd = acquire(Path(folder), what)
    try:
        yield
    finally:
        release(fd, Path(folder))
