"""A model's L2 penalty applied as weight decay in the optimizer instead of in the loss.

For SGD (with or without momentum) and Adam, `weight_decay` adds decay x p to a parameter's gradient
before the update, which is the gradient of (decay / 2) ||p||^2. A penalty strength x mean_p ||D_p||^2
on a soft layer's offsets therefore takes exactly the steps of a weight decay 2 strength / positions on
those offsets (SoftSharedConv2d.penalty_decay), and the optimizer applies it in the pass over the
weights it makes anyway, instead of an extra forward and backward pass over every offset per step.
AdamW decays outside the adaptive step and gradient clipping would clip the penalty's gradient
together with the loss's, so there the penalty stays in the loss.

A model opts in with `penalty_decays() -> [(parameters, decay), ...]` (one entry per penalised
tensor set, for its current strength) and reads `penalty_in_optimizer` to leave the penalty out of
its `regularizer()`.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch import nn

EXACT_OPTIMIZERS = ("sgd", "adam")


def decay_is_exact(cfg: DictConfig) -> bool:
    """Whether the trainer config's optimizer takes the same steps with the penalty as weight decay."""
    return cfg.optimizer in EXACT_OPTIMIZERS and cfg.grad_clip is None


def choose_penalty_path(model: nn.Module, cfg: DictConfig) -> bool:
    """Put the model's penalty into the optimizer where that is exact; True when it did."""
    as_decay = hasattr(model, "penalty_decays") and decay_is_exact(cfg)
    if hasattr(model, "penalty_decays"):
        model.penalty_in_optimizer = as_decay
    return as_decay


def param_groups(model: nn.Module, cfg: DictConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: every trainable parameter in the first (the trainer config's
    weight decay), and with the penalty in the optimizer, each penalised set in its own group with
    the config's decay plus the penalty's."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not getattr(model, "penalty_in_optimizer", False):
        return [{"params": trainable}]
    groups, penalised = [], set()
    for params, decay in model.penalty_decays():
        params = [p for p in params if p.requires_grad]
        if params:
            groups.append({"params": params, "weight_decay": cfg.weight_decay + decay})
            penalised.update(id(p) for p in params)
    return [{"params": [p for p in trainable if id(p) not in penalised]}, *groups]


def refresh_decays(optimizer, model: nn.Module, cfg: DictConfig) -> None:
    """Set the penalised groups' decay for the model's current strength (a schedule moves it per epoch)."""
    if not getattr(model, "penalty_in_optimizer", False):
        return
    decays = {id(group["params"][0]): group["weight_decay"] for group in param_groups(model, cfg)[1:]}
    for group in optimizer.param_groups[1:]:
        group["weight_decay"] = decays[id(group["params"][0])]
