"""multi_mnist and multi_digits: two overlapping digits per image, tasks `left` and `right`
(how the pairs are made: psx/data/pairs.py).

multi_mnist pairs MNIST's digits (28 + shift pixels square; 36x36 by default): the MNIST
training split is divided into a stratified validation holdout and the rest, test pairs come
from MNIST's test split; generated once and cached beside MNIST. multi_digits is its offline
twin from scikit-learn's bundled 8x8 digits, split as dataset=digits splits them.

`dataset.task=left` (or right) turns either into an ordinary single-label image set, so the
single-task models can train on one task; with task=null both labels are kept (y is (N, 2)).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psx.data.entry import DatasetEntry
from psx.data.sets.digits import DigitsConfig, split_digits
from psx.data.sets.digits import check as check_digits
from psx.data.sets.mnist import MNIST, NUM_CLASSES, ImageSetConfig, check_image_set
from psx.data.spec import IMAGES, MULTITASK, DataSpec
from psx.errors import PsxError

TASKS = ("left", "right")
BASE_SIZE = {"multi_mnist": 28, "multi_digits": 8}


@dataclass
class MultiMNISTConfig(ImageSetConfig):
    name: str = "multi_mnist"
    shift: int = 8               # pixels the right digit is moved down and right; the canvas is 28 + shift
    task: Optional[str] = None   # null: both tasks (y has one column per task); left | right: a single-label set


@dataclass
class MultiDigitsConfig(DigitsConfig):
    name: str = "multi_digits"
    shift: int = 3               # pixels the right digit is moved down and right; the canvas is 8 + shift
    task: Optional[str] = None   # null: both tasks (y has one column per task); left | right: a single-label set


def spec(cfg) -> DataSpec:
    side = BASE_SIZE[cfg.name] + cfg.shift
    if cfg.task is None:
        return DataSpec(cfg.name, (1, side, side), NUM_CLASSES, kind=MULTITASK, tasks=TASKS)
    return DataSpec(cfg.name, (1, side, side), NUM_CLASSES, kind=IMAGES)


def check_pairs(cfg) -> None:
    side = BASE_SIZE[cfg.name]
    if not 1 <= cfg.shift < side:
        raise PsxError(f"dataset.shift must be between 1 and {side - 1} so the two digits overlap, got {cfg.shift}")
    if cfg.task not in (None, *TASKS):
        raise PsxError(f"dataset.task must be left, right or null (both tasks), got {cfg.task!r}")


def _column(cfg) -> Optional[int]:
    """The label column a single-task view keeps (None: both tasks)."""
    return None if cfg.task is None else TASKS.index(cfg.task)


def _mnist_pairs(cfg: MultiMNISTConfig, data_dir) -> dict:
    import torch

    from psx.data.images import load_images
    from psx.data.pairs import make_pairs
    from psx.data.holdouts import check_holdouts
    from psx.data.subsets import stratified_split

    base = load_images(MNIST, data_dir, cfg.download, cfg.verify)
    check_holdouts({"val_size": cfg.val_size}, NUM_CLASSES, total=len(base["train_y"]))
    val_idx, train_idx = (torch.from_numpy(i) for i in stratified_split(base["train_y"].numpy(), [cfg.val_size], cfg.split_seed))
    parts = {
        "train": (base["train_x"][train_idx], base["train_y"][train_idx]),
        "val": (base["train_x"][val_idx], base["train_y"][val_idx]),
        "test": (base["test_x"], base["test_y"]),
    }
    return make_pairs(parts, cfg.shift, cfg.split_seed)


def build_multi_mnist(cfg: MultiMNISTConfig, data_dir: Optional[Path]):
    import psx.data.store as store
    from psx.data.pairs import pairs_data

    params = {"shift": cfg.shift, "val_size": cfg.val_size, "split_seed": cfg.split_seed}
    tag = f"multi_mnist-shift{cfg.shift}-val{cfg.val_size}-seed{cfg.split_seed}"
    t = store.cached_load(MNIST, data_dir, cfg.download, cfg.verify, lambda: _mnist_pairs(cfg, data_dir), tag, params)
    return pairs_data(t, spec(cfg), _column(cfg))


def build_multi_digits(cfg: MultiDigitsConfig, data_dir: Optional[Path] = None):
    """Tiny: generated in memory in a few milliseconds, never cached."""
    import numpy as np
    import torch

    from psx.data.pairs import make_pairs, pairs_data

    images, labels, parts = split_digits(cfg)
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # 0..16 -> 0..255
    y = torch.from_numpy(labels)
    base = {name: (x[torch.from_numpy(parts[name])], y[torch.from_numpy(parts[name])]) for name in ("train", "val", "test")}
    return pairs_data(make_pairs(base, cfg.shift, cfg.split_seed), spec(cfg), _column(cfg))


def _check_multi_mnist(cfg: MultiMNISTConfig) -> None:
    check_image_set(cfg)
    check_pairs(cfg)


def _check_multi_digits(cfg: MultiDigitsConfig) -> None:
    check_digits(cfg)
    check_pairs(cfg)


DATASETS = [
    DatasetEntry("multi_mnist", MultiMNISTConfig, spec, build_multi_mnist, "two overlapping MNIST digits, tasks left/right",
                 source=MNIST, check=_check_multi_mnist),
    DatasetEntry("multi_digits", MultiDigitsConfig, spec, build_multi_digits,
                 "built in memory from digits: two overlapping digits, tasks left/right", check=_check_multi_digits),
]
