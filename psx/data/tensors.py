"""The tensors the trainer consumes: image splits (uint8 in memory, standardised per batch),
token streams, and a whole data set with its spec."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional

import torch

from psx.data.spec import DataSpec


class Standardize:
    """uint8 images -> float32 (x / 255 - mean) / std per channel, one fused op per batch.

    Keeping images as uint8 in memory costs a quarter of float32 (MNIST 47 MB instead of 188 MB,
    CIFAR-10 147 MB instead of 590 MB, which matters on a GPU) and a multiply-add per batch,
    which is negligible next to the model."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.scale = (1.0 / (255.0 * std)).view(-1, 1, 1).float()
        self.shift = (-mean / std).view(-1, 1, 1).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def to(self, device: torch.device) -> "Standardize":
        moved = Standardize.__new__(Standardize)
        moved.scale, moved.shift = self.scale.to(device), self.shift.to(device)
        return moved


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    transform: Optional[Standardize] = None  # applied per batch (uint8 storage -> model input)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx, augment=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the examples at idx (an index tensor or a slice), ready for a model.
        `augment(x, generator)` runs on the stored values (uint8 pixels) before the transform."""
        x = self.x[idx]
        if augment is not None:
            x = augment(x, generator)
        return (self.transform(x) if self.transform is not None else x), self.y[idx]

    def to(self, device: torch.device) -> "Split":
        transform = self.transform.to(device) if self.transform is not None else None
        return Split(self.x.to(device), self.y.to(device), transform)

    def subset(self, idx: torch.Tensor) -> "Split":
        return replace(self, x=self.x[idx].contiguous(), y=self.y[idx].contiguous())


@dataclass
class Tokens:
    """One split of a language-modelling corpus: a single 1-D stream of word indices.

    Batching follows the classic PTB setups (pytorch/examples word_language_model): the stream
    is cut into `n_streams` equal contiguous columns (the remainder is dropped), and each step
    reads a `bptt`-long window of every column; targets are the inputs shifted by one token.
    Hidden state can be carried from one window to the next because column b of window i+1
    continues column b of window i."""

    ids: torch.Tensor  # (num_tokens,) int64

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device) -> "Tokens":
        return Tokens(self.ids.to(device))

    def streams(self, n_streams: int) -> torch.Tensor:
        """(steps, n_streams): column b is the b-th contiguous piece of the stream."""
        steps = len(self.ids) // n_streams
        if steps < 2:
            raise ValueError(f"{len(self.ids)} tokens cannot fill {n_streams} streams of at least 2 tokens")
        return self.ids[: steps * n_streams].view(n_streams, steps).t().contiguous()

    @staticmethod
    def windows(streams: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets), each (<= bptt, n_streams), over the whole of `streams` in order."""
        for i in range(0, len(streams) - 1, bptt):
            yield Tokens.window(streams, i, bptt)

    @staticmethod
    def window(streams: torch.Tensor, start: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window at row `start`: inputs and the targets one token later (shorter at the end)."""
        n = min(bptt, len(streams) - 1 - start)
        return streams[start:start + n], streams[start + 1:start + 1 + n]


@dataclass
class Data:
    spec: DataSpec
    train: Split | Tokens
    val: Split | Tokens
    test: Split | Tokens
    # Passed by the trainer to train.batch() for every training batch: (x, generator) -> x.
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None
    vocab: tuple[str, ...] = field(default=(), repr=False)  # tokens: index -> word

    def to(self, device: torch.device) -> "Data":
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def nbytes(self) -> int:
        """Memory the data tensors take (to decide whether they fit on the device)."""
        tensors = [t for split in (self.train, self.val, self.test)
                   for t in ((split.ids,) if isinstance(split, Tokens) else (split.x, split.y))]
        return sum(t.numel() * t.element_size() for t in tensors)
