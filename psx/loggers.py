"""Where metrics go. CSV always; other trackers plug in behind the same small interface."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


class CSVLogger:
    """One row per epoch in metrics.csv, flushed as it is written so a killed run keeps its rows."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._writer = None

    def log(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
