"""MNIST domains: the same digits seen another way, made deterministically from MNIST's files, as the
tasks one pretrained backbone is adapted to (adapters, LoRA, head only, full fine-tuning).

- mnist_rotated: every image turned 90 degrees counter-clockwise (exact: a transpose, no resampling);
- mnist_inverted: white digits on black become black on white (255 - pixel);
- mnist_permuted: the pixels of every image shuffled by one fixed permutation (`permutation_seed`),
  as in the permuted-MNIST benchmark: no spatial structure is left to a convolution.

Splits, validation holdout and train_size subsets are MNIST's; the inputs are standardised with the
transformed training part's own statistics.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from psx.data.sets.mnist import MNIST, ImageSetConfig, grey_28_entry, spec


@dataclass
class RotatedMNISTConfig(ImageSetConfig):
    name: str = "mnist_rotated"


@dataclass
class InvertedMNISTConfig(ImageSetConfig):
    name: str = "mnist_inverted"


@dataclass
class PermutedMNISTConfig(ImageSetConfig):
    name: str = "mnist_permuted"
    permutation_seed: int = 0  # seeds the one pixel permutation every image goes through


def domain_transform(cfg: ImageSetConfig):
    """uint8 images (N, 1, 28, 28) -> the domain's uint8 images."""
    import torch

    if cfg.name == "mnist_rotated":
        return lambda x: torch.rot90(x, 1, dims=(2, 3)).contiguous()
    if cfg.name == "mnist_inverted":
        return lambda x: 255 - x
    order = torch.randperm(28 * 28, generator=torch.Generator().manual_seed(cfg.permutation_seed))
    return lambda x: x.flatten(1)[:, order].view_as(x).contiguous()


def build(cfg: ImageSetConfig, data_dir: Optional[Path]):
    from psx.data.images import build_image_set, channel_stats
    from psx.data.tensors import Standardize

    data = build_image_set(cfg, data_dir, MNIST, spec(cfg))
    change = domain_transform(cfg)
    train_x = change(data.train.x)
    standardize = Standardize(*channel_stats(train_x))
    return replace(data, train=replace(data.train, x=train_x, transform=standardize),
                   val=replace(data.val, x=change(data.val.x), transform=standardize),
                   test=replace(data.test, x=change(data.test.x), transform=standardize))


DATASETS = [
    grey_28_entry("mnist_rotated", RotatedMNISTConfig, build, "MNIST turned 90 degrees (a task for adapters)", MNIST),
    grey_28_entry("mnist_inverted", InvertedMNISTConfig, build, "MNIST with inverted grey levels (a task for adapters)",
                  MNIST),
    grey_28_entry("mnist_permuted", PermutedMNISTConfig, build,
                  "MNIST's pixels in one fixed random order (a task for adapters)", MNIST),
]
