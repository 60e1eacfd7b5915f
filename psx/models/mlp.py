"""Fully connected baseline: no spatial prior at all."""
from __future__ import annotations

import math

from torch import nn

from psx.data.spec import DataSpec
from psx.models.families.mlp import MLPConfig


def mlp_head(in_features: int, hidden: list[int], out_features: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, spec: DataSpec):
        super().__init__()
        self.net = mlp_head(math.prod(spec.input_shape), list(cfg.hidden), spec.num_classes, cfg.dropout)

    def forward(self, x):
        return self.net(x.flatten(1))
