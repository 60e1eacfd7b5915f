"""Two-digit multi-task sets: built from the base set's own splits, deterministic, stratified subsets."""
from collections import Counter

import numpy as np
import pytest
import torch

from psx.data import build_data, strata
from psx.data.images import load_images
from psx.data.pairs import partners
from psx.data.registry import dataset_entry, default_config
from psx.data.sets.digits import load_digits_arrays
from psx.data.subsets import stratified_split
from psx.errors import PsxError

MNIST = dataset_entry("mnist").source


def multi_cfg(name, **overrides):
    return default_config(name, **overrides)


def digits_parts():
    """The base digits of each split, exactly as dataset=digits splits them."""
    images, labels = load_digits_arrays()
    x = torch.from_numpy(np.rint(images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    test, val, train = stratified_split(labels, [360, 180], 0)
    return {"train": (x[train], labels[train]), "val": (x[val], labels[val]), "test": (x[test], labels[test])}


def test_partners_are_a_permutation_without_fixed_points():
    for n in [2, 3, 10, 1000]:
        p = partners(n, seed=n)
        assert sorted(p) == list(range(n)) and not np.any(p == np.arange(n))


def test_multi_digits_pairs_come_from_their_own_split_only():
    data = build_data(multi_cfg("multi_digits"))
    assert data.spec.kind == "multitask" and data.spec.tasks == ("left", "right") and data.spec.input_shape == (1, 11, 11)
    for name, (x, y) in digits_parts().items():
        split = getattr(data, name)
        assert split.y.shape == (len(y), 2)
        assert split.y[:, 0].tolist() == y.tolist()  # every base digit of this split is a left digit once...
        assert Counter(split.y[:, 1].tolist()) == Counter(y.tolist())  # ...and a right digit once
        assert torch.equal(split.x[:, :, :3, :8], x[:, :, :3, :])  # rows above the overlap: the left digit
        right = torch.from_numpy(partners(len(y), seed=0 * 1000 + ["train", "val", "test"].index(name)))
        assert torch.equal(split.x[:, :, 8:, 3:], x[right][:, :, 5:, :])  # rows below it: the right digit


def test_multi_digits_is_deterministic_and_single_task_view_is_a_plain_image_set():
    a, b = build_data(multi_cfg("multi_digits")), build_data(multi_cfg("multi_digits"))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    right = build_data(multi_cfg("multi_digits", task="right"))
    assert right.spec.kind == "images" and right.spec.tasks == ()
    assert torch.equal(right.train.y, a.train.y[:, 1]) and torch.equal(right.train.x, a.train.x)


@pytest.mark.parametrize("size", [100, 300, 1000])
def test_multi_digits_subsets_are_stratified_by_label_pair_and_nested(size):
    full = build_data(multi_cfg("multi_digits"))
    small = build_data(multi_cfg("multi_digits", train_size=size))
    larger = build_data(multi_cfg("multi_digits", train_size=min(size + 200, len(full.train))))
    pairs, small_pairs = strata(full.train.y.numpy(), 10), strata(small.train.y.numpy(), 10)
    for p in np.unique(pairs):
        assert abs(np.sum(small_pairs == p) - size * np.mean(pairs == p)) <= 1 + 1e-9
    rows = lambda d: Counter(map(bytes, d.train.x.reshape(len(d.train), -1).numpy()))  # noqa: E731
    assert not rows(small) - rows(larger)
    assert len(small.val) == len(full.val) and len(small.test) == len(full.test)


def test_multi_digits_train_size_below_one_per_pair_is_refused():
    groups = len(np.unique(strata(build_data(multi_cfg("multi_digits")).train.y.numpy(), 10)))
    with pytest.raises(PsxError, match=f"one example per combination of task labels \\({groups} combinations\\)"):
        build_data(multi_cfg("multi_digits", train_size=groups - 1))


def test_multi_mnist_from_the_real_files(mnist_root):
    base = load_images(MNIST, mnist_root)
    data = build_data(multi_cfg("multi_mnist"), mnist_root)
    assert data.spec.input_shape == (1, 36, 36)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert torch.equal(data.test.y[:, 0], base["test_y"])  # test pairs only from the test split
    assert torch.equal(data.test.x[:, :, :8, :28], base["test_x"][:, :, :8, :])
    train_labels = Counter(data.train.y[:, 0].tolist()) + Counter(data.val.y[:, 0].tolist())
    assert train_labels == Counter(base["train_y"].tolist())
    cache = list(MNIST.path(mnist_root).glob("psx-multi_mnist-*.pt"))
    assert len(cache) == 1
    again = build_data(multi_cfg("multi_mnist"), mnist_root)  # from the cache
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.val.y, data.val.y)
