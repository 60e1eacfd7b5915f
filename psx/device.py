"""Turn the `device` config into a torch.device, failing early and clearly."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from psx.errors import PsxError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(cfg: DictConfig) -> torch.device:
    kind = cfg.type
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    elif kind == "cuda" and not torch.cuda.is_available():
        raise PsxError("device=cuda but CUDA is not available on this machine (use device=cpu or device=auto)")
    elif kind == "mps" and not _mps_available():
        raise PsxError("device=mps but Apple MPS is not available on this machine (use device=cpu or device=auto)")
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    return torch.device(kind)
