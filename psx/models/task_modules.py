"""`model.adapter`: small per-task modules on a backbone that stays fixed (Houlsby et al. 2019's
bottleneck adapters, Hu et al. 2021's LoRA), for the families that take them (cnn, transformer).

The network builds with them in place and every other tensor frozen, except the `trainable`
prefixes its family names (a classifier, which each task needs its own of). The backbone's weights
come from `model.init_from` (matched by name: the adapters keep the backbone's names intact), and a
fresh adapter or LoRA computes exactly the backbone's function. What a task then adds is exactly the
trainable tensors: summary.json's params/added_per_task.
"""
from __future__ import annotations

import torch
from torch import nn

from psx.errors import PsxError
from psx.models.adapters import add_adapters, add_lora, freeze_all_but

def add_task_modules(model: nn.Module, adapter: str, size: int, blocks: list[str], lora_targets: list[str],
                     example: torch.Tensor, channel_dim: int, trainable: list[str]) -> None:
    """Bottleneck adapters (of `size` units) after each of `blocks`, or LoRA (rank `size`) on the
    Linear and attention layers under `lora_targets`, or nothing ("head"); then freeze all but them
    and `trainable`. "none" leaves the model as it is: every tensor trains (full fine-tuning)."""
    if adapter == "none":
        return
    if adapter == "head":  # the baseline: no module added, the task trains only its own output layer
        pass
    elif adapter == "bottleneck":
        add_adapters(model, blocks, size, example, channel_dim)
    else:
        if not lora_targets:
            raise PsxError("model.adapter=lora: the model has no hidden Linear or attention layer to adapt")
        add_lora(model, lora_targets, size)
    freeze_all_but(model, trainable)
