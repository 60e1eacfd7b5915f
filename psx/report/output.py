"""The report folder is written whole or not at all: every file goes into a staging folder beside
it, which then replaces the old report in two renames. A report that fails half-way leaves the
previous one (or none), never a mix."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from psx import runlock
from psx.errors import PsxError


class Staging:
    """`with Staging(out) as folder:` write into folder; on success it becomes `out`."""

    def __init__(self, out: Path):
        self.out = out
        self.folder = out.parent / f".{out.name}.tmp-{os.getpid()}"
        self.lock: int | None = None

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            # One report writer at a time in a folder (psx.runlock); a second gets the owner's line.
            self.lock = runlock.acquire(self.out.parent, "report")
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir()
        except OSError as e:
            self._unlock()
            raise PsxError(unwritable(self.out, e)) from None
        return self.folder

    def _unlock(self) -> None:
        if self.lock is not None:
            runlock.release(self.lock, self.out.parent)
            self.lock = None

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self._finish(kind)
        finally:
            self._unlock()

    def _finish(self, kind) -> None:
        if kind is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
        try:
            if self.out.is_dir() and not self.out.is_symlink():
                self.out.rename(old)
            elif self.out.exists() or self.out.is_symlink():
                raise PsxError(f"cannot write the report to {self.out}: it exists and is not a folder; give --out DIR")
            self.folder.rename(self.out)
        except OSError as e:
            shutil.rmtree(self.folder, ignore_errors=True)
            if old.exists() and not self.out.exists():
                old.rename(self.out)
            raise PsxError(unwritable(self.out, e)) from None
        except PsxError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)


def unwritable(out: Path, error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"cannot write the report to {out} ({reason}; is the folder read-only?); give another folder with --out DIR"
