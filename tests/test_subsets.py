import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from psx.data import build_data
from psx.data.subsets import nested_subset, stratified_order, stratified_split
from psx.errors import PsxError

DIGITS = dict(name="digits", test_size=360, val_size=180, split_seed=0, train_size=None, subset_seed=0)


def digits(**overrides):
    return build_data(OmegaConf.create({**DIGITS, **overrides}))


def imbalanced_labels():
    rng = np.random.default_rng(1)
    return rng.choice(10, size=3000, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum())


@pytest.mark.parametrize("size", [10, 37, 100, 555, 2999])
def test_subsets_are_stratified_within_one_of_proportional(size):
    labels = imbalanced_labels()
    subset = labels[nested_subset(labels, size, seed=3)]
    for c in range(10):
        proportional = size * np.mean(labels == c)
        assert abs(np.sum(subset == c) - proportional) <= 1.0 + 1e-9, (c, np.sum(subset == c), proportional)


def test_every_class_is_present_once_there_is_room_for_one_each():
    labels = imbalanced_labels()
    assert set(labels[nested_subset(labels, 10, seed=0)]) == set(range(10))


def test_subsets_are_nested_for_one_seed():
    labels = imbalanced_labels()
    sizes = [10, 50, 100, 1000, 2500]
    subsets = [set(nested_subset(labels, n, seed=7)) for n in sizes]
    for small, large in zip(subsets, subsets[1:]):
        assert small <= large
    assert [len(s) for s in subsets] == sizes


def test_different_seeds_give_different_subsets():
    labels = imbalanced_labels()
    assert set(nested_subset(labels, 100, 0)) != set(nested_subset(labels, 100, 1))


def test_order_is_deterministic_across_processes():
    code = (
        "import numpy as np; from psx.data.subsets import stratified_order;"
        "print(stratified_order(np.arange(500) % 7, 11)[:40].tolist())"
    )
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert out[0] == out[1]
    assert out[0].strip() == str(stratified_order(np.arange(500) % 7, 11)[:40].tolist())


def test_split_parts_are_disjoint_and_cover_everything():
    labels = imbalanced_labels()
    test, val, train = stratified_split(labels, [300, 200], seed=0)
    assert len(test) == 300 and len(val) == 200 and len(train) == 2500
    assert not set(test) & set(val) and not set(test) & set(train) and not set(val) & set(train)
    assert len(set(test) | set(val) | set(train)) == len(labels)


def test_digits_split_sizes_and_no_overlap_between_train_val_test():
    data = digits()
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 180, 360)
    assert data.spec.input_shape == (1, 8, 8) and data.spec.num_classes == 10
    rows = lambda split: {tuple(r) for r in split.x.flatten(1).numpy().round(5).tolist()}  # noqa: E731
    # digits holds a handful of exact duplicate images; overlap must not exceed those.
    assert len(rows(data.train) & rows(data.test)) <= 3
    assert len(rows(data.val) & rows(data.test)) <= 3


def test_train_size_shrinks_only_the_training_part_and_is_nested():
    full, small, smaller = digits(), digits(train_size=200), digits(train_size=50)
    assert (len(small.train), len(small.val), len(small.test)) == (200, 180, 360)
    assert len(smaller.train) == 50
    torch_rows = lambda split: {tuple(r) for r in split.x.flatten(1).numpy().round(5).tolist()}  # noqa: E731
    assert torch_rows(smaller.train) <= torch_rows(small.train) <= torch_rows(full.train)
    assert np.bincount(small.train.y.numpy(), minlength=10).min() >= 19


@pytest.mark.parametrize("size,message", [(5000, "only 1257"), (9, "one example per class")])
def test_impossible_train_sizes_are_clear_errors(size, message):
    with pytest.raises(PsxError, match=message):
        digits(train_size=size)
