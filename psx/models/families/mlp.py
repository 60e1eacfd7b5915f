"""MLP family: the baseline with no spatial prior (flatten the image, then fully connected
layers). One arm, `dense`, which shares nothing and is its own reference."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from psx.models.family import Family, ModelConfig, require_positive_list


@dataclass
class MLPConfig(ModelConfig):
    family: str = "mlp"
    arm: str = "dense"
    hidden: List[int] = field(default_factory=lambda: [256, 128])


def check(config: MLPConfig) -> None:
    require_positive_list(config, "hidden")


FAMILY = Family(
    name="mlp",
    config=MLPConfig,
    arms=("dense",),
    reference_arm="dense",
    accepts=("images",),
    network="psx.models.mlp:MLP",
    check=check,
)
