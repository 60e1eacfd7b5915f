"""One way to write a file so that a reader never sees half of it.

The content goes to a temporary file beside the target, then one rename replaces the target
(atomic on POSIX within a folder). The temporary name carries the process id and a random
suffix, so two writers of the same file (two processes resuming one run, a job and its
re-run) never write into each other's temporary file; a failed write removes its own.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yields a fresh temporary path to write; on a clean exit it replaces `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path | str, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=str)
            f.write("\n")


def write_bytes_atomic(path: Path | str, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a full disk can also show up only here


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def disk_error(path: Path | str, error: OSError) -> str:
    """One line for a write that the disk refused: names the path and says why."""
    where = error.filename or path
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {where}: no space left on the device (free some space, then resume the run)"
    if error.errno == errno.EROFS:
        return f"cannot write {where}: the file system is read-only"
    if error.errno == errno.EACCES:
        return f"cannot write {where}: permission denied (a read-only folder?)"
    return f"cannot write {where}: {error.strerror or error}"
