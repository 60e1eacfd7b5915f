"""CNN family: LeNet-style [conv -> relu -> maxpool] per entry of `channels`, then an MLP head.

Arms: `shared` (each Conv2d reuses one filter bank at every position), `soft` (SoftSharedConv2d: a
filter per position written as the shared filter plus an offset, W_p = W + D_p, with
`soft.strength * mean_p ||D_p||^2` added to the loss: 0 is locally connected, large is the conv) and
`unshared` (the same topology with LocallyConnected2d: an own filter and bias at every output position).
Dynamic sharing: `untie_at` (the shared arm's convs become locally connected at that epoch's start,
their filters copied to every position; `plateau`: at the start of the epoch after `untie_patience`
validations without improvement) and `soft.schedule` (the soft arm's strength per epoch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from psx.errors import PsxError
from psx.models.family import Family, ModelConfig, require_positive, require_positive_list

ADAPTERS = ("none", "head", "bottleneck", "lora")
SCHEDULES = ("constant", "linear", "cosine", "exponential")  # psx.models.soft_shared.SCHEDULE_SHAPES


@dataclass
class SoftConfig:
    """The soft arm's penalty strength: `strength` at epoch 1, moving to `end` (reached at epoch
    1 + `epochs`, kept after) in the schedule's shape; `constant` keeps `strength` throughout."""

    strength: float = 1.0
    schedule: str = "constant"
    end: Optional[float] = None
    epochs: Optional[int] = None


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
    soft: SoftConfig = field(default_factory=SoftConfig)  # the soft arm's penalty (ignored by the others)
    untie_at: Any = None  # shared arm: untie every conv at the start of this epoch (>= 2), or "plateau"
    untie_patience: int = 1  # untie_at=plateau: validations without improvement before it unties
    # Per-task modules on a fixed backbone (with init_from): none (all trains) | head (only the classifier
    # trains) | bottleneck (after each conv, adapter_size channels) | lora (rank adapter_size, on the head's
    # hidden layers); with head, bottleneck or lora all else is frozen but the classifier.
    adapter: str = "none"
    adapter_size: int = 8


def check(config: CNNConfig) -> None:
    require_positive(config, ["kernel_size", "stride", "pool"])
    require_positive_list(config, "channels", allow_empty=False)
    require_positive_list(config, "hidden")
    if config.adapter not in ADAPTERS:
        raise PsxError(f"model.adapter={config.adapter!r} is not one of {', '.join(ADAPTERS)}")
    require_positive(config, ["adapter_size"])
    soft = config.soft
    if soft.schedule not in SCHEDULES:
        raise PsxError(f"model.soft.schedule={soft.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if soft.strength < 0 or (soft.end is not None and soft.end < 0):
        raise PsxError(f"model.soft.strength and model.soft.end must be >= 0, got {soft.strength} and {soft.end}")
    if soft.schedule == "exponential" and not (soft.strength > 0 and soft.end):
        raise PsxError("model.soft.schedule=exponential needs model.soft.strength > 0 and model.soft.end > 0")
    if soft.schedule != "constant" and (soft.end is None or soft.epochs is None or soft.epochs < 1):
        raise PsxError(f"model.soft.schedule={soft.schedule} needs model.soft.end (the strength it moves to) "
                       f"and model.soft.epochs >= 1 (over how many epochs)")
    if config.untie_at is not None and config.adapter != "none":
        raise PsxError("model.untie_at and model.adapter do not go together (untying replaces the adapted convs)")
    require_positive(config, ["untie_patience"])
    at = config.untie_at
    epoch = isinstance(at, int) and not isinstance(at, bool)
    if at is not None and (config.arm != "shared" or not (at == "plateau" or (epoch and at >= 2))):
        raise PsxError(f"model.untie_at unties the shared arm's convs at an epoch >= 2 or on a plateau (got {at!r} "
                       f"with arm {config.arm})")


FAMILY = Family(
    name="cnn",
    config=CNNConfig,
    arms=("shared", "soft", "unshared"),
    reference_arm="unshared",
    accepts=("images",),
    network="psx.models.cnn:CNN",
    check=check,
)
