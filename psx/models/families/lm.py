"""LM family: the LSTM word-level language model of pytorch/examples word_language_model.
Arms: `tied` (the decoder weight is the input embedding, one Parameter used twice) and `untied`
(a separate output weight). The transformer language model is its own family (transformer.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from psx.errors import PsxError
from psx.models.family import Family, ModelConfig, require_positive


@dataclass
class LMSize:
    layers: int
    hidden_size: int
    dropout: float


def classic_sizes() -> Dict[str, LMSize]:
    """The well-known PTB setups (Zaremba et al. 2014's medium and large)."""
    return {"small": LMSize(2, 200, 0.2), "medium": LMSize(2, 650, 0.5), "large": LMSize(2, 1500, 0.65)}


@dataclass
class LSTMLMConfig(ModelConfig):
    family: str = "lm"
    arm: str = "tied"
    tie_projection: bool = False  # tied with embedding_size != hidden_size: project hidden -> embedding first
    size: str = "small"  # a key of `sizes`; conf/model/lm_tied.yaml takes layers, hidden_size, dropout from it
    sizes: Dict[str, LMSize] = field(default_factory=classic_sizes)
    layers: int = 2
    hidden_size: int = 200
    embedding_size: Optional[int] = None  # None: hidden_size
    dropout: float = 0.2


def check(config: LSTMLMConfig) -> None:
    if config.size not in config.sizes:
        raise PsxError(f"model.size={config.size!r} is not one of {', '.join(config.sizes)}")
    require_positive(config, ["layers", "hidden_size"])
    if config.embedding_size is not None:
        require_positive(config, ["embedding_size"])


def needs_tokens(config: ModelConfig, spec) -> str:
    return f"{config.name} is a language model and {spec.name} holds {spec.kind}; use dataset=ptb"


FAMILY = Family(
    name="lm",
    config=LSTMLMConfig,
    arms=("tied", "untied"),
    reference_arm="untied",
    accepts=("tokens",),
    network="psx.models.lm:LSTMLanguageModel",
    check=check,
    mismatch=needs_tokens,
)
