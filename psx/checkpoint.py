"""Checkpoint files: written atomically, read with weights_only=True (no pickled code runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from psx.atomic import atomic_path
from psx.errors import PsxError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_file(location: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file (clear error if there is none)."""
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise PsxError(f"no checkpoint at {path}")
    return path


def load_checkpoint(location: str | Path) -> dict[str, Any]:
    path = checkpoint_file(location)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise PsxError(f"cannot read checkpoint {path}: {e}") from None
