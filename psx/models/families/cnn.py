"""CNN family: LeNet-style [conv -> relu -> maxpool] per entry of `channels`, then an MLP head.

Arms: `shared` (each Conv2d reuses one filter bank at every position) and `unshared` (the same
topology with LocallyConnected2d: an own filter and bias at every output position).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from psx.models.family import Family, ModelConfig, require_positive, require_positive_list


@dataclass
class CNNConfig(ModelConfig):
    family: str = "cnn"
    arm: str = "shared"
    channels: List[int] = field(default_factory=lambda: [32, 64])  # one conv layer per entry
    kernel_size: int = 3
    stride: int = 1
    padding: Optional[int] = None  # None = "same" padding (kernel_size // 2)
    pool: int = 2  # max-pool size after each conv; 1 = no pooling
    hidden: List[int] = field(default_factory=lambda: [128])  # the head's hidden widths


def check(config: CNNConfig) -> None:
    require_positive(config, ["kernel_size", "stride", "pool"])
    require_positive_list(config, "channels", allow_empty=False)
    require_positive_list(config, "hidden")


FAMILY = Family(
    name="cnn",
    config=CNNConfig,
    arms=("shared", "unshared"),
    reference_arm="unshared",
    accepts=("images",),
    network="psx.models.cnn:CNN",
    check=check,
)
