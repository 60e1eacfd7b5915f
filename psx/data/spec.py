"""What a model may know about its data (torch-free: `psx data list` and the config checks
read it without loading torch). The tensors themselves are in psx.data.tensors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# What kind of data a DataSpec describes; model families declare which kinds they accept.
IMAGES = "images"        # x: (N, C, H, W), y: (N,) class index
MULTITASK = "multitask"  # x: (N, C, H, W), y: (N, len(tasks)) one class index per task
TOKENS = "tokens"        # one long stream of word indices per split (see psx.data.tensors.Tokens)


@dataclass(frozen=True)
class DataSpec:
    name: str
    input_shape: tuple[int, ...]  # one example, e.g. (channels, height, width); () for tokens
    num_classes: int              # classes per task (images, multitask) or vocabulary size (tokens)
    kind: str = IMAGES
    tasks: tuple[str, ...] = ()   # multitask: the name of each column of y, e.g. ("left", "right")
    vocab_size: Optional[int] = None  # tokens
    seq_len: Optional[int] = None     # tokens: the bptt window length


def input_text(spec: DataSpec) -> str:
    """What one example is, for people: its shape, or for a token stream the window and vocabulary
    (its input_shape is () because a window's length is the model's choice, not the data's)."""
    if spec.kind == TOKENS:
        return f"(windows of {spec.seq_len} tokens, vocabulary {spec.vocab_size:,})"
    return str(spec.input_shape)
