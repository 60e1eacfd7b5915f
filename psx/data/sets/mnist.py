"""MNIST and Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grey, 10 classes.

Files in torchvision's layout (<data folder>/MNIST/raw/, FashionMNIST/raw/), with the md5s
torchvision publishes; fetched by torchvision if missing. Validation is a fixed, seeded,
stratified holdout of the training split; the test split is never used for selection.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psx.data.entry import DatasetEntry
from psx.data.spec import DataSpec
from psx.data.store import Source, torchvision_fetcher
from psx.data.holdouts import check_holdouts

NUM_CLASSES = 10


@dataclass
class ImageSetConfig:
    """The keys every published train/test image set takes (mnist, fashion_mnist, cifar10, multi_mnist)."""

    name: str = "mnist"
    val_size: int = 5000            # held out (stratified) of the training images for validation
    split_seed: int = 0             # seeds the validation holdout
    train_size: Optional[int] = None  # subsample the training part: an integer count, or null for all of it
    subset_seed: int = 0            # seeds the (stratified, nested) training subset
    download: bool = True           # fetch missing files (false: fail with what to do instead)
    verify: bool = True             # check every file against its published md5 before decoding it


@dataclass
class MNISTConfig(ImageSetConfig):
    name: str = "mnist"


@dataclass
class FashionMNISTConfig(ImageSetConfig):
    name: str = "fashion_mnist"


def check_image_set(cfg: ImageSetConfig) -> None:
    check_holdouts({"val_size": cfg.val_size}, NUM_CLASSES)


def spec(cfg: ImageSetConfig) -> DataSpec:
    """Every 28x28 grey ten-class set: MNIST, Fashion-MNIST and the MNIST domains."""
    return DataSpec(name=cfg.name, input_shape=(1, 28, 28), num_classes=NUM_CLASSES)


def grey_28_entry(name: str, config: type, build, about: str, source: Source) -> DatasetEntry:
    """The declaration of a 28x28 grey ten-class set read from published files (the validation holdout checked)."""
    return DatasetEntry(name, config, spec, build, about, source=source, check=check_image_set)


def _decoder(cls_name: str):
    def decode(data_dir: Path) -> dict:
        from psx.data.images import decode_mnist_like

        return decode_mnist_like(cls_name, data_dir)

    return decode


MNIST = Source(
    "mnist", "MNIST/raw",
    (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
     ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
     ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
     ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    fetch=torchvision_fetcher("MNIST"), decode=_decoder("MNIST"),
)
FASHION_MNIST = Source(
    "fashion_mnist", "FashionMNIST/raw",
    (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
     ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
     ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
     ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    fetch=torchvision_fetcher("FashionMNIST"), decode=_decoder("FashionMNIST"),
)


def _builder(source: Source):
    def build(cfg: ImageSetConfig, data_dir: Optional[Path]):
        from psx.data.images import build_image_set

        return build_image_set(cfg, data_dir, source, spec(cfg))

    return build


DATASETS = [
    grey_28_entry("mnist", MNISTConfig, _builder(MNIST), "handwritten digits, 28x28 grey", MNIST),
    grey_28_entry("fashion_mnist", FashionMNISTConfig, _builder(FASHION_MNIST), "clothing, 28x28 grey", FASHION_MNIST),
]
