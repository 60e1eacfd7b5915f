"""Running a model once to learn what its layers see (their inputs' or outputs' shapes)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def run_with_hooks(model: nn.Module, example: torch.Tensor, hooks: list[tuple[nn.Module, Callable]],
                   pre: bool = False) -> None:
    """One forward pass of `example` without gradients, with each hook on its module (a forward
    pre-hook if `pre`, else a forward hook), all removed again however the pass ends. The hooks
    must return None, so that the pass computes what the model computes."""
    handles = [module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
               for module, hook in hooks]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
