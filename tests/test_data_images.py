"""Image data sets on real files (from PSX_DATA_DIR or CI's copy, copied into temporary folders)."""
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, copy_into, missing_data, real_files

from psx.data import build_data, store
from psx.data.images import channel_stats, crop_flip, load_images
from psx.data.registry import dataset_entry, default_config
from psx.errors import PsxError

MNIST = dataset_entry("mnist").source

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def dataset_cfg(name, **overrides):
    return default_config(name, **overrides)


def row_hashes(x: torch.Tensor) -> Counter:
    return Counter(hashlib.md5(row.numpy().tobytes()).hexdigest() for row in x.reshape(len(x), -1))


def test_mnist_has_the_published_counts(mnist_root):
    t = load_images(MNIST, mnist_root)
    assert t["train_x"].shape == (60_000, 1, 28, 28) and t["test_x"].shape == (10_000, 1, 28, 28)
    assert t["train_x"].dtype == torch.uint8 and int(t["train_x"].max()) == 255
    assert torch.bincount(t["train_y"]).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(t["test_y"]).tolist() == MNIST_TEST_COUNTS


def test_mnist_validation_is_a_stratified_holdout_of_train_and_test_is_untouched(mnist_root):
    raw = load_images(MNIST, mnist_root)
    data = build_data(dataset_cfg("mnist"), mnist_root)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    # train + val is exactly the published training split (a partition: no overlap, nothing lost).
    assert row_hashes(data.train.x) + row_hashes(data.val.x) == row_hashes(raw["train_x"])
    assert torch.equal(data.test.x, raw["test_x"]) and torch.equal(data.test.y, raw["test_y"])
    for c, n in enumerate(MNIST_TRAIN_COUNTS):
        assert abs((data.val.y == c).sum().item() - 5000 * n / 60000) <= 1
    # Per-batch standardisation: the training part has mean 0 and std 1 after it.
    x, y = data.train.batch(slice(0, None))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_mnist_cache_loads_in_well_under_a_second(mnist_root):
    load_images(MNIST, mnist_root)  # decoded and cached by now
    assert MNIST.cache_path(mnist_root).is_file()
    started = time.perf_counter()
    build_data(dataset_cfg("mnist"), mnist_root)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("size", [100, 1000, 7777])
def test_mnist_subsets_are_stratified_nested_and_validation_never_shrinks(mnist_root, size):
    full = build_data(dataset_cfg("mnist"), mnist_root)
    small = build_data(dataset_cfg("mnist", train_size=size), mnist_root)
    larger = build_data(dataset_cfg("mnist", train_size=size + 1000), mnist_root)
    assert len(small.train) == size and len(small.val) == 5000 and len(small.test) == 10_000
    counts = torch.bincount(full.train.y, minlength=10)
    for c in range(10):
        proportional = size * counts[c].item() / len(full.train)
        assert abs((small.train.y == c).sum().item() - proportional) <= 1 + 1e-9
    assert not row_hashes(small.train.x) - row_hashes(larger.train.x)  # nested
    assert not row_hashes(small.train.x) & row_hashes(small.val.x)


def test_mnist_subset_is_the_same_in_another_process(mnist_root):
    code = (
        "import hashlib; from psx.data import build_data; from psx.data.registry import default_config;"
        "cfg = default_config('mnist', train_size=500, subset_seed=3);"
        f"d = build_data(cfg, {str(mnist_root)!r}); print(hashlib.md5(d.train.x.numpy().tobytes() + d.val.x.numpy().tobytes()).hexdigest())"
    )
    here = build_data(dataset_cfg("mnist", train_size=500, subset_seed=3), mnist_root)
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert there.returncode == 0, there.stderr
    assert there.stdout.strip() == hashlib.md5(here.train.x.numpy().tobytes() + here.val.x.numpy().tobytes()).hexdigest()


def test_a_corrupt_file_is_reported_and_never_used(tmp_path):
    root = copy_into(tmp_path, "mnist")
    labels = root / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    blob = bytearray(labels.read_bytes())
    blob[100] ^= 0xFF
    labels.write_bytes(bytes(blob))
    with pytest.raises(PsxError, match=r"mnist: .*t10k-labels-idx1-ubyte.gz is corrupt .*psx data download mnist"):
        load_images(MNIST, root)
    assert not MNIST.cache_path(root).exists()
    assert not (root / "MNIST/raw/t10k-labels-idx1-ubyte").exists()  # not even extracted


def test_half_written_or_foreign_cache_is_never_trusted(tmp_path):
    root = copy_into(tmp_path, "mnist")
    cache = MNIST.cache_path(root)
    good = load_images(MNIST, root)
    cache.write_bytes(cache.read_bytes()[: 1 << 20])  # as if the writer died halfway
    (cache.parent / f".{cache.name}.12345.tmp").write_bytes(b"leftover of a killed writer")
    again = load_images(MNIST, root)
    assert torch.equal(again["train_x"], good["train_x"]) and torch.equal(again["test_y"], good["test_y"])
    assert torch.load(cache, weights_only=True)["format"] == store.CACHE_FORMAT  # rewritten whole


def test_missing_files_without_download_name_the_set_the_folder_and_what_to_do(tmp_path):
    with pytest.raises(PsxError) as e:
        load_images(MNIST, tmp_path, download=False)
    message = str(e.value)
    assert message.startswith("mnist: ") and str(tmp_path / "MNIST/raw") in message
    assert "psx data download mnist" in message and "\n" not in message


def test_fashion_mnist_label_files_are_the_published_ones_and_images_are_reported_missing(tmp_path):
    source = dataset_entry("fashion_mnist").source
    labels = real_files("fashion_mnist", ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
    root = tmp_path
    source.path(root).mkdir(parents=True)
    md5 = dict(source.files)
    for name, path in labels.items():  # only the label files: the images must be reported missing
        shutil.copyfile(path, source.path(root) / name)
        assert store.file_md5(source.path(root) / name) == md5[name]
    with pytest.raises(PsxError, match=r"fashion_mnist: train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz not found"):
        build_data(dataset_cfg("fashion_mnist", download=False), root)


def first_100_cifar10_test_images():
    """(labels, (100, 32, 32, 3) uint8 HWC images, batches.meta path): the first 100 CIFAR-10 test
    images, from the user's CIFAR-10 (PSX_DATA_DIR) or CI's copy (a CSV of them: label, then 3072 HWC pixels)."""
    user = os.environ.get("PSX_DATA_DIR")
    folder = dataset_entry("cifar10").source.path(user) if user else None
    if folder is not None and (folder / "test_batch").is_file() and (folder / "batches.meta").is_file():
        with open(folder / "test_batch", "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        hwc = np.asarray(batch["data"][:100], dtype=np.uint8).reshape(100, 3, 32, 32).transpose(0, 2, 3, 1)
        return list(batch["labels"][:100]), hwc, folder / "batches.meta"
    csv, meta = SHARED_DATA / "cifar10/cifar10_test.csv", SHARED_DATA / "cifar10/batches.meta"
    if not (csv.is_file() and meta.is_file()):
        missing_data(f"cifar10 not found: put test_batch and batches.meta in {folder or '$PSX_DATA_DIR/cifar-10-batches-py'} "
                     "(torchvision's layout; `psx data download cifar10` fetches them on a machine with internet)")
    rows = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    return rows[:, 0].tolist(), rows[:, 1:].astype(np.uint8).reshape(100, 32, 32, 3), meta


@pytest.fixture
def cifar_from_100_real_images(tmp_path):
    """cifar-10-batches-py/ in torchvision's python format, built from 100 real test images:
    test_batch holds all 100 in order; data_batch_1..5 hold 20 each (so 'train' is the same 100)."""
    labels, hwc, meta = first_100_cifar10_test_images()
    chw_rows = hwc.transpose(0, 3, 1, 2).reshape(100, 3072)  # the published CHW byte layout
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    shutil.copyfile(meta, folder / "batches.meta")

    def write(name, idx):
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": [labels[i] for i in idx], "data": chw_rows[idx]}, f, protocol=2)

    for k in range(5):
        write(f"data_batch_{k + 1}", list(range(20 * k, 20 * k + 20)))
    write("test_batch", list(range(100)))
    return tmp_path, torch.from_numpy(np.ascontiguousarray(hwc)).permute(0, 3, 1, 2), torch.tensor(labels)


def test_cifar10_integrity_check_rejects_batches_that_are_not_the_published_ones(cifar_from_100_real_images):
    root, _, _ = cifar_from_100_real_images
    source = dataset_entry("cifar10").source
    assert store.file_md5(root / "cifar-10-batches-py/batches.meta") == dict(source.files)["batches.meta"]  # real
    with pytest.raises(PsxError, match=r"cifar10: .*data_batch_1 is corrupt"):
        build_data(dataset_cfg("cifar10", val_size=10), root)
    assert not source.cache_path(root).exists()


def test_cifar10_loads_the_real_images_through_the_user_path(cifar_from_100_real_images):
    root, images, labels = cifar_from_100_real_images
    # dataset.verify=false is the documented switch for hand-assembled copies like this one.
    data = build_data(dataset_cfg("cifar10", val_size=10, verify=False), root)
    assert data.spec.input_shape == (3, 32, 32)
    assert torch.equal(data.test.x, images) and torch.equal(data.test.y, labels)
    assert torch.bincount(data.test.y).tolist() == [10, 6, 8, 10, 7, 8, 16, 11, 13, 11]
    assert data.test.y[:20].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    assert row_hashes(data.train.x) + row_hashes(data.val.x) == row_hashes(images)
    # A cache decoded from unverified files is not trusted by a verifying run.
    with pytest.raises(PsxError, match="is corrupt"):
        build_data(dataset_cfg("cifar10", val_size=10), root)


def test_channel_stats_are_exact():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(mean.double(), ref.mean(1), atol=1e-6)
    assert torch.allclose(std.double(), ref.std(1, unbiased=False), atol=1e-6)


def test_crop_flip_is_a_seeded_shifted_and_maybe_flipped_crop_of_the_padded_batch():
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(0)))
    padded = torch.nn.functional.pad(x, (4,) * 4)
    flips = 0
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(9) for dx in range(9) for flip in (False, True)
            if torch.equal(out[i], (padded[i, :, dy:dy + 32, dx:dx + 32].flip(2) if flip else padded[i, :, dy:dy + 32, dx:dx + 32]))
        ]
        assert matches, i
        flips += matches[0][2]
    assert 10 < flips < 54  # about half are flipped
