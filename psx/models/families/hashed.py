"""Hashed family (HashedNets, Chen et al. 2015): an MLP or a CNN whose every weight is virtual, read
through a fixed, seeded hash (with a sign hash) from a few real buckets, at `compression` real per
virtual weight (0.125 = 1/8; 1/64 as 0.015625). Biases stay one per unit, as in the paper.

Arms: `hashed`; `equal`, the paper's baseline: the dense network with its widths scaled until it has
as many real parameters as the hashed one; `dense`, the same network unhashed (the virtual size,
the reference). Sharing here is hashing only: params/unshared_equiv counts the virtual weights, and
the CNN base's spatial reuse of its filters is the cnn family's business (not counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from psx.errors import PsxError
from psx.models.family import Family, ModelConfig, require_positive, require_positive_list

BASES = ("mlp", "cnn")


@dataclass
class HashedConfig(ModelConfig):
    family: str = "hashed"
    arm: str = "hashed"
    base: str = "mlp"  # mlp: flatten, then hidden layers; cnn: [conv -> relu -> maxpool] per channel entry, then hidden
    compression: float = 0.125  # real parameters per virtual weight in each hashed layer
    hidden: List[int] = field(default_factory=lambda: [256, 128])
    channels: List[int] = field(default_factory=lambda: [32, 64])  # cnn base only
    kernel_size: int = 3  # cnn base only; "same" padding
    pool: int = 2  # cnn base only
    hash_seed: int = 0  # the hash of layer i uses seed hash_seed * 1000 + i (fixed: not the run's seed)


def check(config: HashedConfig) -> None:
    if config.base not in BASES:
        raise PsxError(f"model.base={config.base!r} is not one of {', '.join(BASES)}")
    if not 0 < config.compression <= 1:
        raise PsxError(f"model.compression must be in (0, 1], e.g. 0.125 for 1/8 (got {config.compression})")
    require_positive_list(config, "hidden")
    require_positive_list(config, "channels", allow_empty=config.base == "mlp")
    require_positive(config, ["kernel_size", "pool"])


FAMILY = Family(
    name="hashed",
    config=HashedConfig,
    arms=("hashed", "equal", "dense"),
    reference_arm="dense",
    accepts=("images",),
    network="psx.models.hashed_net:HashedNet",
    check=check,
)
