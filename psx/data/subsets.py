"""Stratified, seeded, nested index selection.

One ordering of the examples is drawn per seed such that every prefix of it is stratified:
within each class the examples are shuffled, and the j-th example of a class with n_c members
gets the sort key (j + 0.5) / n_c, so after any prefix each class holds round(t * n_c) examples
for some t, i.e. within one of its proportional share. The first example of every class sorts
before all others, so any prefix of length >= #classes holds every class. Taking prefixes of
this one ordering makes subsets nested by construction: the 100-example subset is inside the
1000-example subset drawn with the same seed.
"""
from __future__ import annotations

import numpy as np

from psx.errors import PsxError


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of range(len(labels)) whose every prefix is class-stratified."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        rank = np.arange(len(members), dtype=np.float64)
        class_keys = (rank + 0.5) / len(members)
        class_keys[0] = -1.0  # one of each class first
        keys[members] = class_keys
    tiebreak = rng.random(len(labels))
    return np.lexsort((tiebreak, keys))


def stratified_split(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Split indices into consecutive stratified parts of the given sizes, plus the rest."""
    if sum(sizes) > len(labels):
        raise ValueError(f"cannot split {len(labels)} examples into parts of {sizes}")
    order = stratified_order(labels, seed)
    parts, start = [], 0
    for size in sizes:
        parts.append(np.sort(order[start:start + size]))
        start += size
    parts.append(np.sort(order[start:]))
    return parts


def nested_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices (into labels) of a stratified subset of `size`; nested across sizes for one seed."""
    return np.sort(stratified_order(labels, seed)[:size])


def strata(y: np.ndarray, num_classes: int) -> np.ndarray:
    """The label a subset is stratified by: the class, or for several tasks the combination of classes."""
    if y.ndim == 1:
        return y
    return np.ravel_multi_index(tuple(y.T), (num_classes,) * y.shape[1])


def subsample_train(train, spec, size: int | None, seed: int):
    """A stratified, seeded, nested subset of the training Split (validation and test never shrink)."""
    import torch

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
