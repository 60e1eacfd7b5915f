"""Models see the data only through its DataSpec."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.cnn import CNN
from psx.models.mlp import MLP

FAMILIES = {"cnn": CNN, "mlp": MLP}


def build_model(cfg: DictConfig, spec: DataSpec) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise PsxError(f"unknown model family {cfg.family!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[cfg.family](cfg, spec)


def param_counts(model: nn.Module) -> dict[str, int]:
    """`params/unique` counts each tensor once however often it is reused (model.parameters()
    already deduplicates shared Parameters); `params/unshared_equiv` is what the same topology
    would have with no sharing."""
    unique = sum(p.numel() for p in model.parameters())
    equivalent = getattr(model, "unshared_equivalent_params", None)
    return {
        "params/unique": unique,
        "params/unshared_equiv": equivalent(unique) if equivalent else unique,
    }
