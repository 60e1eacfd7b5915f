"""Multi-task classifiers on two-digit images: a shared conv trunk with a head per task, vs an
independent network (same architecture: trunk + head) per task.

The shared trunk serves every task, so its unshared equivalent is one trunk per task: exactly
what `mtl_separate` has (params/unshared_equiv counts sharing across tasks; the spatial sharing
inside each conv is the CNN comparison's business and is the same in both arms).
"""
from __future__ import annotations

from dataclasses import fields

import torch
from torch import nn

from psx.data.spec import MULTITASK, DataSpec
from psx.errors import PsxError
from psx.models.cnn import CNN, strength_schedule
from psx.models.families.cnn import CNNConfig
from psx.models.families.mtl import MTLConfig
from psx.models.soft_shared import pair_penalty


def _single_task_cnn(cfg: MTLConfig, spec: DataSpec) -> CNN:
    """The CNN family's network (ordinary convolutions) on the same images, for one task's classes.
    The arm means sharing across tasks here, so the convs are always Conv2d (the CNN's shared arm)."""
    single = DataSpec(name=spec.name, input_shape=spec.input_shape, num_classes=spec.num_classes)
    cnn = {f.name: getattr(cfg, f.name) for f in fields(CNNConfig)}
    return CNN(CNNConfig(**{**cnn, "family": "cnn", "arm": "shared"}), single)


class MultiTaskCNN(nn.Module):
    def __init__(self, cfg: MTLConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != MULTITASK:
            raise PsxError(f"model {cfg.name} needs a multi-task data set (multi_digits, multi_mnist); {spec.name} holds {spec.kind}")
        self.tasks, self.shared = list(spec.tasks), cfg.arm == "shared"
        self.schedule = strength_schedule(cfg) if cfg.arm == "soft" else None
        self.strength = self.schedule.at(0) if self.schedule else 0.0
        self.training_hooks = self.schedule is not None  # the trainer's regularizer hook matters (psx.stacked)
        if self.shared:
            template = _single_task_cnn(cfg, spec)
            self.trunk = template.features
            self.heads = nn.ModuleDict({task: _single_task_cnn(cfg, spec).head for task in self.tasks})
        else:
            self.networks = nn.ModuleDict({task: _single_task_cnn(cfg, spec) for task in self.tasks})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, tasks, classes)
        if self.shared:
            features = self.trunk(x).flatten(1)
            return torch.stack([self.heads[task](features) for task in self.tasks], 1)
        return torch.stack([self.networks[task](x) for task in self.tasks], 1)

    def parameter_reuse(self) -> dict[str, float]:
        if not self.shared:
            return {}
        return {f"trunk.{name}": len(self.tasks) for name, _ in self.trunk.named_parameters()}

    def regularizer(self) -> torch.Tensor | None:
        """The soft arm: strength x the sum over task pairs of ||trunk_a - trunk_b||^2 (matching tensors)."""
        if self.strength == 0:
            return None
        trunks = [self.networks[task].features for task in self.tasks]
        pairs = [pair_penalty(a, b) for i, a in enumerate(trunks) for b in trunks[i + 1:]]
        return self.strength * torch.stack(pairs).sum()

    def parameter_kinds(self) -> dict[str, str]:
        """For psx inspect: the soft arm's trunk tensors, each pulled towards its twins in the other tasks."""
        if self.schedule is None:
            return {}
        return {f"networks.{task}.features.{name}": f"soft-tied: {', '.join(o for o in self.tasks if o != task)}"
                for task in self.tasks for name, _ in self.networks[task].features.named_parameters()}

    def on_epoch_start(self, epoch: int, stale=()) -> bool:
        if self.schedule is not None:
            self.strength = self.schedule.at(epoch - 1)
        return False

    def epoch_metrics(self) -> dict[str, float]:
        return {"soft/strength": self.strength} if self.schedule is not None else {}
