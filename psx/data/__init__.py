"""Data sets as in-memory tensors plus a spec; nothing here knows about models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from psx.data.digits import build_digits
from psx.data.images import build_images, image_spec
from psx.data.multitask import build_multi, multi_spec
from psx.data.spec import Data, DataSpec, Split, Tokens
from psx.data.subsets import nested_subset
from psx.data.text import build_ptb, ptb_spec
from psx.errors import PsxError

BUILDERS = {
    "digits": lambda cfg, data_dir: build_digits(cfg),
    "mnist": build_images,
    "fashion_mnist": build_images,
    "cifar10": build_images,
    "ptb": build_ptb,
    "multi_mnist": build_multi,
    "multi_digits": build_multi,
}

# What each data set looks like, known from its config alone (no data loaded): lets a model
# be checked against the data before anything is read or trained.
SPECS = {
    "digits": lambda cfg: DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10),
    "mnist": image_spec,
    "fashion_mnist": image_spec,
    "cifar10": image_spec,
    "ptb": ptb_spec,
    "multi_mnist": multi_spec,
    "multi_digits": multi_spec,
}

__all__ = ["build_data", "describe", "subsample_train", "Data", "DataSpec", "Split", "Tokens"]


def describe(cfg: DictConfig) -> DataSpec:
    """The DataSpec build_data(cfg) will return, without loading anything."""
    if cfg.name not in SPECS:
        raise PsxError(f"unknown dataset {cfg.name!r} (known: {', '.join(SPECS)})")
    return SPECS[cfg.name](cfg)


# The downloadable source each data set reads (bundled sets need none).
SOURCE_OF = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "ptb": "ptb", "multi_mnist": "mnist"}


def require(cfg: DictConfig, data_dir: str | Path) -> None:
    """Make sure the files cfg needs are in data_dir, downloading them if allowed; run once
    before a run or sweep starts, so a sweep downloads once and a missing set fails early."""
    from psx.data import store

    if cfg.name in SOURCE_OF:
        store.require_files(store.get_source(SOURCE_OF[cfg.name]), data_dir, cfg.download)


def build_data(cfg: DictConfig, data_dir: str | Path | None = None) -> Data:
    """Load the data set named by cfg.name and apply the training-size ablation."""
    if cfg.name not in BUILDERS:
        raise PsxError(f"unknown dataset {cfg.name!r} (known: {', '.join(BUILDERS)})")
    data = BUILDERS[cfg.name](cfg, data_dir)
    if isinstance(data.train, Split):  # token streams take their prefix in the builder
        data.train = subsample_train(data.train, data.spec, cfg.train_size, cfg.subset_seed)
    return data


def strata(y: np.ndarray, num_classes: int) -> np.ndarray:
    """The label a subset is stratified by: the class, or for several tasks the combination of classes."""
    if y.ndim == 1:
        return y
    return np.ravel_multi_index(tuple(y.T), (num_classes,) * y.shape[1])


def subsample_train(train: Split, spec: DataSpec, size: int | None, seed: int) -> Split:
    """A stratified, seeded, nested subset of the training part (validation and test never shrink)."""
    if size is None:
        return train
    if size > len(train):
        raise PsxError(f"dataset.train_size={size} but {spec.name} has only {len(train)} training examples")
    labels = strata(train.y.numpy(), spec.num_classes)
    groups = len(np.unique(labels))
    if size < groups:
        what = f"class ({groups} classes)" if train.y.ndim == 1 else f"combination of task labels ({groups} combinations)"
        raise PsxError(f"dataset.train_size={size} is fewer than one example per {what}")
    return train.subset(torch.from_numpy(nested_subset(labels, size, seed)))
