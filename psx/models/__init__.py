"""Models see the data only through its DataSpec."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from psx.data.spec import IMAGES, MULTITASK, TOKENS, DataSpec
from psx.errors import PsxError
from psx.models.cnn import CNN
from psx.models.mlp import MLP

FAMILIES = {"cnn": CNN, "mlp": MLP}


# The kinds of data each family can train on (see psx.data.spec).
ACCEPTS = {"cnn": (IMAGES,), "mlp": (IMAGES,)}


def build_model(cfg: DictConfig, spec: DataSpec) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise PsxError(f"unknown model family {cfg.family!r} (known: {', '.join(FAMILIES)})")
    if spec.kind not in ACCEPTS[cfg.family]:
        raise PsxError(f"model {cfg.name} cannot train on {spec.name}: {_mismatch(cfg, spec)}")
    return FAMILIES[cfg.family](cfg, spec)


def _mismatch(cfg: DictConfig, spec: DataSpec) -> str:
    if spec.kind == TOKENS:
        return f"{spec.name} is a word-level token stream and {cfg.name} takes images; choose a language model"
    if spec.kind == MULTITASK:
        return (f"{spec.name} has {len(spec.tasks)} tasks ({', '.join(spec.tasks)}) and {cfg.name} predicts one label; "
                f"choose a multi-task model, or train on one task with dataset.task={spec.tasks[0]}")
    return f"{cfg.name} accepts {', '.join(ACCEPTS[cfg.family])}, not {spec.kind}"


def check_fits(cfg: DictConfig, spec: DataSpec) -> None:
    """Raise the PsxError build_model would, without allocating anything (parameters on the meta device)."""
    import torch

    with torch.device("meta"):
        build_model(cfg, spec)


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
