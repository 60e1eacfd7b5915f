"""Models see the data only through its DataSpec."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.cnn import CNN
from psx.models.mlp import MLP
from psx.models.rnn import RecurrentClassifier

FAMILIES = {"cnn": CNN, "mlp": MLP, "rnn": RecurrentClassifier}


def build_model(cfg: DictConfig, spec: DataSpec) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise PsxError(f"unknown model family {cfg.family!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[cfg.family](cfg, spec)


def param_counts(model: nn.Module) -> dict[str, int]:
    """`params/unique` counts each tensor once however often it is reused (named_parameters()
    already deduplicates shared Parameters); `params/unshared_equiv` is what the same topology
    would have with no sharing: each tensor times the number of places that use it, as the
    model's `parameter_reuse()` states (a conv filter bank: its output positions; a recurrent
    cell: its time steps; a tied embedding: 2)."""
    reuse = model.parameter_reuse() if hasattr(model, "parameter_reuse") else {}
    named = list(model.named_parameters())
    unknown = set(reuse) - {name for name, _ in named}
    if unknown:  # a typo here would silently under-count
        raise ValueError(f"parameter_reuse names unknown parameters: {sorted(unknown)}")
    return {
        "params/unique": sum(p.numel() for _, p in named),
        "params/unshared_equiv": sum(p.numel() * reuse.get(name, 1) for name, p in named),
        "params/trainable": sum(p.numel() for _, p in named if p.requires_grad),
    }
