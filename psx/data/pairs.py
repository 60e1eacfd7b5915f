"""Two-digit images for the multi-task comparison (MultiMNIST-style, as in Sener & Koltun 2018).

Each image overlays two digits on an (H + shift) x (W + shift) canvas: the `left` one in the
top-left corner, the `right` one shifted by `shift` pixels down and right, so they overlap
(pixel-wise maximum where they do). The tasks are the two digits' classes.

Pairs are built inside each split of the base set, so no base image is in two splits: every
base image of a part is the left digit of exactly one example and the right digit of exactly
one other (a seeded permutation without fixed points). The data sets themselves (multi_mnist,
multi_digits) are declared in psx/data/sets/multitask.py.
"""
from __future__ import annotations

import numpy as np
import torch

from psx.data.spec import DataSpec
from psx.data.tensors import Data, Split, Standardize

def partners(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point: example i pairs base image i with partners[i]."""
    perm = np.random.default_rng(seed).permutation(n)
    for i in np.flatnonzero(perm == np.arange(n)):  # swap a fixed point with its neighbour's partner
        if perm[i] == i:  # (an earlier swap may have fixed it already)
            j = (i + 1) % n
            perm[i], perm[j] = perm[j], perm[i]
    return perm


def overlay(x: torch.Tensor, y: torch.Tensor, shift: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, h, w) uint8 digits -> (N, 1, h + shift, w + shift) two-digit images and (N, 2) labels."""
    n, c, h, w = x.shape
    right = torch.from_numpy(partners(n, seed))
    canvas = torch.zeros(n, c, h + shift, w + shift, dtype=x.dtype)
    canvas[:, :, :h, :w] = x
    canvas[:, :, shift:, shift:] = torch.maximum(canvas[:, :, shift:, shift:], x[right])
    return canvas, torch.stack([y, y[right]], dim=1)


def make_pairs(parts: dict[str, tuple[torch.Tensor, torch.Tensor]], shift: int, seed: int) -> dict[str, torch.Tensor]:
    """{train,val,test}_{x,y} from the base images and labels of each split (in that order)."""
    out = {}
    for i, (split, (x, y)) in enumerate(parts.items()):
        out[f"{split}_x"], out[f"{split}_y"] = overlay(x, y, shift, seed * 1000 + i)
    return out


def pairs_data(t: dict[str, torch.Tensor], spec: DataSpec, column: int | None) -> Data:
    """The Data of made pairs, standardised with the training pairs' statistics; only the labels
    of task `column` (0: left, 1: right) if it is set."""
    from psx.data.images import channel_stats

    transform = Standardize(*channel_stats(t["train_x"]))

    def split(name: str) -> Split:
        y = t[f"{name}_y"] if column is None else t[f"{name}_y"][:, column].contiguous()
        return Split(t[f"{name}_x"], y, transform)

    return Data(spec, split("train"), split("val"), split("test"))
