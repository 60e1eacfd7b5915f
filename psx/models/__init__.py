"""Models see the data only through its DataSpec."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from psx.data.spec import IMAGES, MULTITASK, TOKENS, DataSpec
from psx.errors import PsxError
from psx.models.cnn import CNN
from psx.models.mlp import MLP
from psx.models.lm import build_language_model
from psx.models.multitask import MultiTaskCNN
from psx.models.rnn import RecurrentClassifier

FAMILIES = {"cnn": CNN, "mlp": MLP, "rnn": RecurrentClassifier, "lm": build_language_model, "mtl": MultiTaskCNN}


# The kinds of data each family can train on (see psx.data.spec).
ACCEPTS = {"cnn": (IMAGES,), "mlp": (IMAGES,), "rnn": (IMAGES,), "lm": (TOKENS,), "mtl": (MULTITASK,)}


def build_model(cfg: DictConfig, spec: DataSpec) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise PsxError(f"unknown model family {cfg.family!r} (known: {', '.join(FAMILIES)})")
    if spec.kind not in ACCEPTS[cfg.family]:
        raise PsxError(f"model {cfg.name} cannot train on {spec.name}: {_mismatch(cfg, spec)}")
    return FAMILIES[cfg.family](cfg, spec)


def _mismatch(cfg: DictConfig, spec: DataSpec) -> str:
    if cfg.family == "lm":
        return f"{cfg.name} is a language model and {spec.name} holds {spec.kind}; use dataset=ptb"
    if cfg.family == "mtl":
        return f"{cfg.name} predicts several tasks and {spec.name} has one label; use dataset=multi_digits or multi_mnist"
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
