"""Data sets as in-memory tensors plus a spec; nothing here knows about models."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from psx.data.digits import build_digits
from psx.data.spec import Data, DataSpec, Split
from psx.data.subsets import nested_subset
from psx.errors import PsxError

BUILDERS = {"digits": build_digits}

__all__ = ["build_data", "subsample_train", "Data", "DataSpec", "Split"]


def build_data(cfg: DictConfig) -> Data:
    """Load the data set named by cfg.name and apply the training-size ablation."""
    if cfg.name not in BUILDERS:
        raise PsxError(f"unknown dataset {cfg.name!r} (known: {', '.join(BUILDERS)})")
    data = BUILDERS[cfg.name](cfg)
    data.train = subsample_train(data.train, data.spec, cfg.train_size, cfg.subset_seed)
    return data


def subsample_train(train: Split, spec: DataSpec, size: int | None, seed: int) -> Split:
    """A stratified, seeded, nested subset of the training part (validation and test never shrink)."""
    if size is None:
        return train
    if size > len(train):
        raise PsxError(f"dataset.train_size={size} but {spec.name} has only {len(train)} training examples")
    if size < spec.num_classes:
        raise PsxError(
            f"dataset.train_size={size} is fewer than one example per class ({spec.num_classes} classes)"
        )
    idx = torch.from_numpy(nested_subset(train.y.numpy(), size, seed))
    return Split(train.x[idx].contiguous(), train.y[idx].contiguous())
