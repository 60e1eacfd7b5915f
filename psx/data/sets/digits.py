"""scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, 10 classes, no download.

A fixed, seeded, stratified split: test and validation are set aside first, training is the
rest; pixels are standardised with the statistics of the whole training part, so every
data-size subset (and every model) sees exactly the same input scaling.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psx.data.entry import DatasetEntry
from psx.data.spec import DataSpec
from psx.data.holdouts import check_holdouts
from psx.errors import PsxError

NUM_CLASSES = 10


@dataclass
class DigitsConfig:
    name: str = "digits"
    test_size: int = 360              # held out (stratified) for the final test
    val_size: int = 180               # held out (stratified) for validation
    split_seed: int = 0               # seeds the test/validation/training split
    train_size: Optional[int] = None  # subsample the training part: an integer count, or null for all of it
    subset_seed: int = 0              # seeds the (stratified, nested) training subset


def load_digits_arrays():
    """The 1,797 images (float32 8x8, values 0..16) and int64 labels, read from the CSV that scikit-learn ships
    (copies: the caller may change them)."""
    images, labels = _read_digits_csv()
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=1)
def _read_digits_csv():
    """Parsed once per process: a sweep's jobs in one process (the basic launcher) share it, where
    parsing the text took each job longer than its data split.

    Read directly rather than through sklearn.datasets.load_digits, whose import (scipy and
    more) costs about a second of start-up; the file is the same one load_digits reads."""
    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise PsxError("dataset=digits needs scikit-learn (pip install scikit-learn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def split_digits(cfg: DigitsConfig):
    """(images, labels, {"train": idx, "val": idx, "test": idx}): the split dataset=digits and multi_digits share."""
    from psx.data.subsets import stratified_split

    images, labels = load_digits_arrays()
    check_holdouts({"test_size": cfg.test_size, "val_size": cfg.val_size}, NUM_CLASSES, total=len(labels))
    test_idx, val_idx, train_idx = stratified_split(labels, [cfg.test_size, cfg.val_size], cfg.split_seed)
    return images, labels, {"train": train_idx, "val": val_idx, "test": test_idx}


def check(cfg: DigitsConfig) -> None:
    check_holdouts({"test_size": cfg.test_size, "val_size": cfg.val_size}, NUM_CLASSES)


def spec(cfg: DigitsConfig) -> DataSpec:
    return DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=NUM_CLASSES)


def build(cfg: DigitsConfig, data_dir: Optional[Path] = None):
    import torch

    from psx.data.tensors import Data, Split

    images, labels, parts = split_digits(cfg)
    x = torch.from_numpy(images / 16.0).unsqueeze(1)
    train_idx = parts["train"]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    y = torch.from_numpy(labels)

    def split(name: str) -> Split:
        idx = torch.from_numpy(parts[name])
        return Split(x[idx].contiguous(), y[idx].contiguous())

    return Data(spec(cfg), split("train"), split("val"), split("test"))


DATASETS = [DatasetEntry("digits", DigitsConfig, spec, build, "bundled with scikit-learn (8x8 grey, 1,797 images)", check=check)]
