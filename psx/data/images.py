"""What the image sets (psx/data/sets/: mnist, fashion_mnist, cifar10) share: decoding
through torchvision's dataset classes once into cached uint8 tensors, the validation holdout,
per-channel standardisation applied per batch, and the crop + flip augmentation."""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from psx.atomic import atomic_path
import psx.data.store as store
from psx.data.spec import DataSpec
from psx.data.holdouts import check_holdouts
from psx.data.subsets import stratified_split
from psx.data.tensors import Data, Split, Standardize
from psx.errors import PsxError

log = logging.getLogger("psx")

NUM_CLASSES = 10


def extract_checked(gz: Path) -> None:
    """The extracted copy of a (verified) .gz that torchvision reads, made or checked against the
    .gz's content: a damaged or foreign copy is extracted again, never decoded. Runs only when
    the decoded cache is (re)built."""
    target = gz.with_suffix("")
    with gzip.open(gz) as src:
        content = src.read()
    if target.is_file():
        if target.stat().st_size == len(content) and target.read_bytes() == content:
            return
        log.warning("%s does not match %s; extracting it again", target, gz.name)
    # To a temporary name, then rename: a parallel job never reads a half-extracted file.
    with atomic_path(target) as tmp:
        tmp.write_bytes(content)


def decode_mnist_like(cls_name: str, data_dir: Path) -> dict[str, torch.Tensor]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    raw = Path(data_dir) / cls_name / "raw"
    for gz, _ in cls.resources:  # torchvision reads the extracted files: extract (no download needed)
        extract_checked(raw / gz)
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(data_dir), train=train, download=False)
        out[f"{split}_x"] = ds.data.unsqueeze(1).contiguous()  # (N, 1, 28, 28) uint8
        out[f"{split}_y"] = ds.targets.long()
    return out


def decode_cifar10(data_dir: Path) -> dict[str, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    class Preverified(CIFAR10):
        # psx's store has already checked every file against the same md5 list (or the user
        # turned that off with dataset.verify=false); hashing 180 MB again here would add nothing.
        def _check_integrity(self) -> bool:
            return True

    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = Preverified(str(data_dir), train=train, download=False)
        out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> (N, 3, 32, 32)
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.long)
    return out


def load_images(source: store.Source, data_dir: str | Path, download: bool = True, verify: bool = True) -> dict[str, torch.Tensor]:
    """{train_x, train_y, test_x, test_y}: uint8 (N, C, H, W) images and int64 labels, as published."""
    loaded = store.load(source, data_dir, download, verify)
    return {k: loaded[k] for k in ("train_x", "train_y", "test_x", "test_y")}


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 images on the 0..1 scale, from 256-bin histograms
    (no float copy of the data set)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * values.square()).sum() / n - mean.square()
        means.append(mean)
        stds.append(var.clamp_min(1e-12).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, for a whole (B, C, H, W) batch
    in one gather (torchvision's RandomCrop(padding=4) + RandomHorizontalFlip, without PIL).
    Offsets are drawn on the CPU from the seeded generator, so every device sees the same ones."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)  # value 0 = black, as torchvision pads
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator).to(x.device)
    flip = (torch.rand(b, 1, generator=generator) < 0.5).to(x.device)
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    cols = torch.where(flip, cols.flip(1), cols)  # a flipped image reads its columns right to left
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def build_image_set(cfg, data_dir: str | Path | None, source: store.Source, spec: DataSpec, augment=None) -> Data:
    """A published train/test image set: validation is a seeded, stratified holdout of the training split."""
    t = load_images(source, data_dir, cfg.download, cfg.verify)
    if tuple(t["train_x"].shape[1:]) != spec.input_shape:
        raise PsxError(f"{cfg.name}: decoded images are {tuple(t['train_x'].shape[1:])}, expected {spec.input_shape}")
    check_holdouts({"val_size": cfg.val_size}, NUM_CLASSES, total=len(t["train_y"]))
    val_idx, train_idx = (torch.from_numpy(i) for i in stratified_split(t["train_y"].numpy(), [cfg.val_size], cfg.split_seed))
    train_x = t["train_x"][train_idx]
    # Normalise with the statistics of the whole training part, so every train_size subset
    # (and every model) sees the same input scaling.
    transform = Standardize(*channel_stats(train_x))
    return Data(
        spec,
        train=Split(train_x, t["train_y"][train_idx], transform),
        val=Split(t["train_x"][val_idx], t["train_y"][val_idx], transform),
        test=Split(t["test_x"], t["test_y"], transform),
        augment=augment,
    )
