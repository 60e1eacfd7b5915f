"""Data sets as in-memory tensors plus a spec; nothing here knows about models.

Each data set is one module in psx/data/sets/ (see psx.data.registry). This package imports
torch only when data is actually built, so describing or listing data sets stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from psx.data.registry import dataset_entry
from psx.data.spec import DataSpec

__all__ = ["build_data", "describe", "require", "subsample_train", "strata", "Data", "DataSpec", "Split", "Tokens"]


def describe(cfg: Any) -> DataSpec:
    """The DataSpec build_data(cfg) will return, without loading anything."""
    entry = dataset_entry(cfg.name)
    return entry.spec(entry.typed(cfg))


def require(cfg: Any, data_dir: str | Path) -> None:
    """Make sure the files cfg needs are in data_dir, downloading them if allowed; run once
    before a run or sweep starts, so a sweep downloads once and a missing set fails early."""
    import psx.data.store as store

    entry = dataset_entry(cfg.name)
    if entry.source is not None:
        store.require_files(entry.source, data_dir, entry.typed(cfg).download)


def build_data(cfg: Any, data_dir: str | Path | None = None):
    """Load the data set named by cfg.name and apply the training-size ablation."""
    from psx.data.subsets import subsample_train
    from psx.data.tensors import Split

    entry = dataset_entry(cfg.name)
    typed = entry.typed(cfg)
    data = entry.build(typed, data_dir)
    if isinstance(data.train, Split):  # token streams take their prefix in the builder
        data.train = subsample_train(data.train, data.spec, typed.train_size, typed.subset_seed)
    return data


def __getattr__(name: str):
    # The tensor classes and subset helpers import torch: loaded on first use only.
    if name in ("Data", "Split", "Tokens"):
        import psx.data.tensors as tensors

        return getattr(tensors, name)
    if name in ("subsample_train", "strata"):
        import psx.data.subsets as subsets

        return getattr(subsets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
