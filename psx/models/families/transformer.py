"""Transformer family: a causal transformer language model (pre-norm blocks, learned positions).
Arms: `shared` (one block applied at every layer, ALBERT-style cross-layer sharing: the parameter
count does not grow with depth) and `unshared` (a block per layer). `tied` (decoder weight = input
embedding) is an option of both arms. `kv_heads` shares keys and values across groups of query heads
(grouped-query attention; 1 = multi-query; null or = heads: ordinary multi-head attention)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from psx.errors import PsxError
from psx.models.families.cnn import ADAPTERS
from psx.models.families.lm import needs_tokens
from psx.models.family import Family, ModelConfig, require_positive


@dataclass
class TransformerConfig(ModelConfig):
    family: str = "transformer"
    arm: str = "shared"
    tied: bool = True
    tie_projection: bool = False
    layers: int = 4
    hidden_size: int = 256
    embedding_size: Optional[int] = None  # None: hidden_size
    heads: int = 4
    kv_heads: Optional[int] = None  # key/value heads read by the `heads` query heads; None: heads
    feedforward_size: int = 1024
    dropout: float = 0.1
    # Per-task modules on a fixed backbone (with init_from): none (all trains) | head (only the decoder
    # trains) | bottleneck (after each block, adapter_size units) | lora (rank adapter_size, on each
    # block's attention and feed-forward projections); with head, bottleneck or lora all else is frozen.
    adapter: str = "none"
    adapter_size: int = 8


def check(config: TransformerConfig) -> None:
    require_positive(config, ["layers", "hidden_size", "heads", "feedforward_size"])
    if config.embedding_size is not None:
        require_positive(config, ["embedding_size"])
    if config.hidden_size % config.heads:
        raise PsxError(f"model {config.name}: hidden_size {config.hidden_size} is not divisible by heads {config.heads}")
    if config.adapter not in ADAPTERS:
        raise PsxError(f"model.adapter={config.adapter!r} is not one of {', '.join(ADAPTERS)}")
    require_positive(config, ["adapter_size"])
    if config.kv_heads is not None and (config.kv_heads < 1 or config.heads % config.kv_heads):
        raise PsxError(f"model.kv_heads={config.kv_heads} must divide model.heads={config.heads} (e.g. {config.heads}, 1, "
                       f"or a divisor between)")


FAMILY = Family(
    name="transformer",
    config=TransformerConfig,
    arms=("shared", "unshared"),
    reference_arm="unshared",
    accepts=("tokens",),
    network="psx.models.lm:TransformerLanguageModel",
    check=check,
    mismatch=needs_tokens,
)
