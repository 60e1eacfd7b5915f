"""Two-digit images for the multi-task comparison (MultiMNIST-style, as in Sener & Koltun 2018).

Each image overlays two digits on an (H + shift) x (W + shift) canvas: the `left` one in the
top-left corner, the `right` one shifted by `shift` pixels down and right, so they overlap
(pixel-wise maximum where they do). The tasks are the two digits' classes.

Pairs are built inside each split of the base set, so no base image is in two splits: the base
training split is first divided into a stratified validation holdout and the rest, then every
base image of a part is the left digit of exactly one example and the right digit of exactly one
other (a seeded permutation without fixed points). Test pairs come from the base test split.

`dataset.task=left` (or right) turns the set into an ordinary single-label image set, so the
single-task models can train on one task; with task=null both labels are kept (y is (N, 2)).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from psx.data import store
from psx.data.digits import load_digits_arrays
from psx.data.images import channel_stats, load_images
from psx.data.spec import IMAGES, MULTITASK, Data, DataSpec, Split, Standardize
from psx.data.subsets import stratified_split
from psx.errors import PsxError

TASKS = ("left", "right")
BASE_SIZE = {"multi_mnist": 28, "multi_digits": 8}
NUM_CLASSES = 10


def multi_spec(cfg: DictConfig) -> DataSpec:
    side = BASE_SIZE[cfg.name] + cfg.shift
    if cfg.task is None:
        return DataSpec(cfg.name, (1, side, side), NUM_CLASSES, kind=MULTITASK, tasks=TASKS)
    return DataSpec(cfg.name, (1, side, side), NUM_CLASSES, kind=IMAGES)


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
    out = {}
    for i, (split, (x, y)) in enumerate(parts.items()):
        out[f"{split}_x"], out[f"{split}_y"] = overlay(x, y, shift, seed * 1000 + i)
    return out


def _mnist_pairs(cfg: DictConfig, data_dir: str | Path) -> dict[str, torch.Tensor]:
    base = load_images("mnist", data_dir, cfg.download, cfg.verify)
    n = len(base["train_y"])
    if not NUM_CLASSES <= cfg.val_size <= n - NUM_CLASSES:
        raise PsxError(f"dataset.val_size={cfg.val_size} must be between {NUM_CLASSES} and {n - NUM_CLASSES}")
    val_idx, train_idx = (torch.from_numpy(i) for i in stratified_split(base["train_y"].numpy(), [cfg.val_size], cfg.split_seed))
    parts = {
        "train": (base["train_x"][train_idx], base["train_y"][train_idx]),
        "val": (base["train_x"][val_idx], base["train_y"][val_idx]),
        "test": (base["test_x"], base["test_y"]),
    }
    return make_pairs(parts, cfg.shift, cfg.split_seed)


def _digits_pairs(cfg: DictConfig) -> dict[str, torch.Tensor]:
    images, labels = load_digits_arrays()
    if cfg.test_size < NUM_CLASSES or cfg.val_size < NUM_CLASSES or cfg.test_size + cfg.val_size >= len(labels) - NUM_CLASSES:
        raise PsxError(f"dataset.test_size and dataset.val_size must each be >= 10 and leave digits to train on ({len(labels)} in all)")
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # 0..16 -> 0..255
    y = torch.from_numpy(labels)
    test_idx, val_idx, train_idx = (torch.from_numpy(i) for i in stratified_split(labels, [cfg.test_size, cfg.val_size], cfg.split_seed))
    parts = {name: (x[idx], y[idx]) for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    return make_pairs(parts, cfg.shift, cfg.split_seed)


def build_multi(cfg: DictConfig, data_dir: str | Path | None) -> Data:
    spec = multi_spec(cfg)
    if cfg.name == "multi_digits":  # tiny: generated in memory in a few milliseconds
        t = _digits_pairs(cfg)
    else:  # generated once from the cached MNIST tensors, then cached beside them
        source = store.get_source("mnist")
        params = {"shift": cfg.shift, "val_size": cfg.val_size, "split_seed": cfg.split_seed}
        tag = f"multi_mnist-shift{cfg.shift}-val{cfg.val_size}-seed{cfg.split_seed}"
        t = store.cached_load(source, data_dir, cfg.download, cfg.verify, lambda: _mnist_pairs(cfg, data_dir), tag, params)
    transform = Standardize(*channel_stats(t["train_x"]))
    column = None if cfg.task is None else TASKS.index(cfg.task)

    def split(name: str) -> Split:
        y = t[f"{name}_y"] if column is None else t[f"{name}_y"][:, column].contiguous()
        return Split(t[f"{name}_x"], y, transform)

    return Data(spec, split("train"), split("val"), split("test"))
