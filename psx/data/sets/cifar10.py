"""CIFAR-10: 50,000 training and 10,000 test colour images, 32x32, 10 classes.

Files in torchvision's layout (<data folder>/cifar-10-batches-py/), with the md5s torchvision
publishes; fetched by torchvision if missing. `dataset.augment=true` adds random crop (4 px
zero padding) + horizontal flip of each training batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psx.data.entry import DatasetEntry
from psx.data.sets.mnist import NUM_CLASSES, ImageSetConfig, check_image_set
from psx.data.spec import DataSpec
from psx.data.store import Source, torchvision_fetcher


@dataclass
class CIFAR10Config(ImageSetConfig):
    name: str = "cifar10"
    augment: bool = False  # random crop (4 px zero padding) + horizontal flip of each training batch


def spec(cfg: CIFAR10Config) -> DataSpec:
    return DataSpec(name="cifar10", input_shape=(3, 32, 32), num_classes=NUM_CLASSES)


def decode(data_dir: Path) -> dict:
    from psx.data.images import decode_cifar10

    return decode_cifar10(data_dir)


SOURCE = Source(
    "cifar10", "cifar-10-batches-py",
    (("data_batch_1", "c99cafc152244af753f735de768cd75f"),
     ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
     ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
     ("data_batch_4", "634d18415352ddfa80567beed471001a"),
     ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
     ("test_batch", "40351d587109b95175f43aff81a1287e"),
     ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")),
    fetch=torchvision_fetcher("CIFAR10"), decode=decode,
)


def build(cfg: CIFAR10Config, data_dir: Optional[Path]):
    from psx.data.images import build_image_set, crop_flip

    return build_image_set(cfg, data_dir, SOURCE, spec(cfg), augment=crop_flip if cfg.augment else None)


DATASETS = [
    DatasetEntry("cifar10", CIFAR10Config, spec, build, "objects, 32x32 colour", source=SOURCE, check=check_image_set),
]
