"""scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download needed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from psx.data.spec import Data, DataSpec, Split
from psx.data.subsets import stratified_split
from psx.errors import PsxError


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images (8x8, values 0..16) and labels, read from the CSV that scikit-learn ships.

    Read directly rather than through sklearn.datasets.load_digits, whose import (scipy and
    more) costs about a second of start-up; the file is the same one load_digits reads."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise PsxError("dataset=digits needs scikit-learn (pip install scikit-learn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def build_digits(cfg: DictConfig) -> Data:
    images, labels = load_digits_arrays()
    if cfg.test_size < 10 or cfg.val_size < 10:
        raise PsxError("dataset.test_size and dataset.val_size must each hold at least one example per class (10)")
    if cfg.test_size + cfg.val_size >= len(labels) - 10:
        raise PsxError(f"dataset.test_size + dataset.val_size leave too few of the {len(labels)} digits to train on")
    test_idx, val_idx, train_idx = stratified_split(labels, [cfg.test_size, cfg.val_size], cfg.split_seed)

    # Pixels are 0..16; standardise with statistics of the whole training part, so every
    # data-size subset (and every model) sees exactly the same input scaling.
    x = torch.from_numpy(images / 16.0).unsqueeze(1)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    y = torch.from_numpy(labels)

    def split(idx: np.ndarray) -> Split:
        idx_t = torch.from_numpy(idx)
        return Split(x[idx_t].contiguous(), y[idx_t].contiguous())

    spec = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)
    return Data(spec, split(train_idx), split(val_idx), split(test_idx))
