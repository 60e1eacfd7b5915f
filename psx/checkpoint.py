"""Checkpoint files: written atomically, read with weights_only=True (no pickled code runs), and
carrying a digest of their tensors that is checked on every load.

torch.load reads a file whose tensor bytes were changed (a flipped bit, a bad sector, a partial
copy) without complaint: the digest is what tells a damaged checkpoint from a good one. The file
is serialised in memory and written with ordinary file writes, so a full disk is an OSError
naming the path (torch's own writer reports it as "unexpected pos").
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from psx.atomic import disk_error, write_bytes_atomic
from psx.errors import PsxError

CHECKPOINT_NAME = "checkpoint.pt"
DIGEST_KEY = "tensor_sha256"


class DiskRefused(PsxError):
    """A full or read-only disk refused the write; the previous checkpoint is intact."""


class DamagedCheckpoint(PsxError):
    """The file is there but unreadable, or its tensors do not match their digest."""


def tensor_digest(state: Any) -> str:
    """sha256 over every tensor in a nested state (its place, dtype, shape and bytes)."""
    digest = hashlib.sha256()

    def visit(value: Any, place: str) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{place}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if key != DIGEST_KEY:
                    visit(value[key], f"{place}/{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{place}/{i}")

    visit(state, "")
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a crash or a full disk mid-write leaves the previous checkpoint intact."""
    buffer = io.BytesIO()
    torch.save({**state, DIGEST_KEY: tensor_digest(state)}, buffer)
    try:
        write_bytes_atomic(path, buffer.getbuffer())
    except OSError as e:
        raise DiskRefused(disk_error(path, e)) from None


def checkpoint_file(location: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file (clear error if there is none)."""
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise PsxError(f"no checkpoint at {path}")
    return path


def load_checkpoint(location: str | Path) -> dict[str, Any]:
    """The checked state; DamagedCheckpoint (one line) if it cannot be read or does not match."""
    path = checkpoint_file(location)
    if path.stat().st_size == 0:
        raise DamagedCheckpoint(f"cannot read checkpoint {path}: the file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise DamagedCheckpoint(f"cannot read checkpoint {path}: {_reason(e)}") from None
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f"cannot read checkpoint {path}: not a psx checkpoint")
    recorded = state.pop(DIGEST_KEY, None)
    if recorded is not None and recorded != tensor_digest(state):
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: its tensors do not match their digest")
    return state


def _reason(error: Exception) -> str:
    """torch's message without its advice to retry with weights_only=False, which would run
    whatever code a foreign file carries: the line that says what is wrong."""
    text = str(error)
    if "Weights only load failed" not in text:
        return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    text = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation",
                                                             "Please file", "(1)", "(2)", "In PyTorch"))]
    detail = useful[0].split(". ")[0].rstrip(".") if useful else "unknown content"
    return f"not a checkpoint that psx can load safely ({detail})"
