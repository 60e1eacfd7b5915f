"""A model's parameter reuse gathered from the layers that state their own (SoftSharedConv2d, the
hashed layers), for a family whose `parameter_reuse()` is built from such layers."""
from __future__ import annotations

from torch import nn


def layer_reuse(model: nn.Module) -> dict[str, float]:
    """Every submodule's `parameter_reuse()`, its names prefixed with the submodule's name. A layer
    that states its reuse speaks for everything inside it (its children are not asked again); a
    module registered under two names is counted once, under its first, as named_parameters does."""
    reuse: dict[str, float] = {}
    answered: list[str] = []
    for name, module in model.named_modules():
        if module is model or any(name.startswith(prefix + ".") for prefix in answered):
            continue
        if hasattr(module, "parameter_reuse"):
            reuse.update({f"{name}.{tensor}": count for tensor, count in module.parameter_reuse().items()})
            answered.append(name)
    return reuse
