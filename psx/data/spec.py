"""What a model may know about its data, and the tensors the trainer consumes."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DataSpec:
    name: str
    input_shape: tuple[int, ...]  # one example, e.g. (channels, height, width)
    num_classes: int
    kind: str = "images"  # what the examples are; models check it before they are built


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Data:
    spec: DataSpec
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device) -> "Data":
        return Data(self.spec, self.train.to(device), self.val.to(device), self.test.to(device))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in (self.train, self.val, self.test) for t in (s.x, s.y))
