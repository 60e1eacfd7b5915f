"""RNN family: a recurrent classifier reading an image row by row (H steps of C*W pixels),
predicting from the last hidden state. Arms: `shared` (one cell reused at every step) and
`unshared` (a separate cell, own weights, at every step)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from psx.models.family import Family, ModelConfig, require_positive


class Cell(str, Enum):  # a str too, so a plain "lstm" works wherever a Cell does
    rnn = "rnn"
    gru = "gru"
    lstm = "lstm"


@dataclass
class RNNConfig(ModelConfig):
    family: str = "rnn"
    arm: str = "shared"
    cell: Cell = Cell.lstm
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0  # between layers


def check(config: RNNConfig) -> None:
    require_positive(config, ["hidden_size", "num_layers"])


FAMILY = Family(
    name="rnn",
    config=RNNConfig,
    arms=("shared", "unshared"),
    reference_arm="unshared",
    accepts=("images",),
    network="psx.models.rnn:RecurrentClassifier",
    check=check,
)
