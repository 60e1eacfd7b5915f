"""psx's batch path vs torchvision's usual DataLoader on MNIST: training images per second.

What it measures: how fast each pipeline hands out shuffled, normalised float32 training batches
with labels, with no model attached (the input pipeline alone):

  (a) torchvision, the usual way: DataLoader(MNIST(transform=Compose([ToTensor(), Normalize(...)])),
      batch_size=B, shuffle=True, num_workers=0), iterated for `--images` images. Every sample goes
      through PIL and the transform in Python.
  (b) psx, the trainer's own loop: the uint8 tensors from psx's cache (build_data(dataset=mnist)),
      a seeded randperm, then per batch `train.batch(idx)` = one index gather + one fused
      uint8 -> float multiply-add on the whole batch; repeated over whole epochs up to `--images`.

Both read the same files in the same run on the same machine, after one warm-up batch each;
the result is images/s of each and their ratio (the target is >= 10x). The data loading time
(decode/cache) is not part of either figure; psx's cached load time is reported separately.

    python scripts/bench_data.py [--data-dir DIR] [--batch-size 32 128] [--images 60000] [--threads N] [--json out.json] [--quick]

On a CPU that other processes keep busy, use --threads 1: torch's intra-op threads then wait for
a busy core on every small op (a 32-image uint8 gather went from 27 us to 3 ms on 2 shared cores).

DIR must hold MNIST/raw/ (torchvision's layout; default: $PSX_DATA_DIR or ~/.cache/psx/data).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def psx_images_per_s(train, batch_size: int, images: int) -> float:
    shuffler = torch.Generator().manual_seed(0)
    train.batch(torch.arange(batch_size))  # warm-up
    done, started = 0, time.perf_counter()
    while done < images:
        order = torch.randperm(len(train), generator=shuffler)
        for start in range(0, len(train), batch_size):
            x, y = train.batch(order[start:start + batch_size])
            done += len(y)
            if done >= images:
                break
    return done / (time.perf_counter() - started)


def torchvision_images_per_s(data_dir: str, batch_size: int, images: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(data_dir, train=True, download=False, transform=transform),
                        batch_size=batch_size, shuffle=True, num_workers=0)
    next(iter(loader))  # warm-up
    done, started = 0, time.perf_counter()
    while done < images:
        for x, y in loader:
            done += len(y)
            if done >= images:
                break
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("PSX_DATA_DIR", str(Path.home() / ".cache/psx/data")))
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--images", type=int, default=60_000, help="images per measurement (default: one epoch)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="a few thousand images, batch 32 (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size = 3_000, [32]
    if args.threads:
        torch.set_num_threads(args.threads)

    from psx.data import build_data
    from psx.data.registry import default_config

    cfg = default_config("mnist")  # what `dataset=mnist` composes to
    build_data(cfg, args.data_dir)  # decode and cache once (not timed)
    started = time.perf_counter()
    data = build_data(cfg, args.data_dir)
    load_s = time.perf_counter() - started

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"psx cached MNIST load (build_data): {load_s:.3f} s")
    print(f"{'batch':>6} {'torchvision img/s':>18} {'psx img/s':>12} {'ratio':>7}")
    rows = []
    for batch_size in args.batch_size:
        tv = torchvision_images_per_s(args.data_dir, batch_size, args.images)
        ours = psx_images_per_s(data.train, batch_size, args.images)
        rows.append({"batch_size": batch_size, "torchvision_img_s": tv, "psx_img_s": ours, "ratio": ours / tv})
        print(f"{batch_size:>6} {tv:>18,.0f} {ours:>12,.0f} {ours / tv:>6.1f}x")
    if args.json:
        report = {"load_s": load_s, "images": args.images, "threads": torch.get_num_threads(), "results": rows}
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
