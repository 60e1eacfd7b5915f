"""The data folder: fetching and verifying the files a downloadable set needs (its Source, declared
in its module in psx/data/sets/), and psx's decoded cache beside them.

Layout under the data folder (`paths.data_dir`, env PSX_DATA_DIR) is the one torchvision and
torchtext use, so a folder they already filled works as is:

    MNIST/raw/*.gz  FashionMNIST/raw/*.gz  cifar-10-batches-py/*  PennTreebank/ptb.*.txt

Integrity: every published file is checked against the md5 torchvision (torchtext for PTB)
publishes, before it is decoded; a mismatch is reported as corrupt and the file is never used.
`dataset.verify=false` skips that check (for hand-assembled or partial copies, e.g. the tests'
100-image CIFAR-10 batches); a cache decoded from unverified files is marked so, and a later
verified run re-checks the files instead of trusting it. Downloads go through torchvision's own
downloaders, which check the md5 of what they fetch.

The cache (`psx-<name>.pt` beside the raw files) holds uint8/int64 tensors, the size and
mtime of each source file and a digest of its tensors; it is used only while those still match
(an edited or damaged cache is rebuilt). MNIST-like sets are read by torchvision from extracted
copies of the .gz files; those are checked against the verified .gz whenever the cache is built. It is written to a
temporary name and renamed, so a half-written cache is never read; an unreadable one is rebuilt.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from psx.errors import PsxError

log = logging.getLogger("psx")

CACHE_FORMAT = 2  # 2: with the digest of its tensors


@dataclass(frozen=True)
class Source:
    """The published files one downloadable data set reads, and how psx turns them into tensors."""

    name: str                           # the psx data set name, e.g. "mnist"
    folder: str                         # where its files live, relative to the data folder
    files: tuple[tuple[str, str], ...]  # (file name, published md5)
    fetch: Callable[[Path], None]       # download everything into the data folder
    decode: Callable[[Path], dict]      # data folder -> {name: tensor or list}, what the cache holds

    def path(self, data_dir: str | Path) -> Path:
        return Path(data_dir).expanduser() / self.folder

    def cache_path(self, data_dir: str | Path, tag: str | None = None) -> Path:
        return self.path(data_dir) / f"psx-{tag or self.name}.pt"

    def extracted(self, data_dir: str | Path) -> list[Path]:
        """Decompressed copies of the .gz files (torchvision reads MNIST-like sets from them)."""
        folder = self.path(data_dir)
        return [folder / name[: -len(".gz")] for name, _ in self.files if name.endswith(".gz")]


def torchvision_fetcher(cls_name: str) -> Callable[[Path], None]:
    """Download with torchvision's own dataset class (which checks the md5 of what it fetches)."""

    def fetch(data_dir: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, cls_name)(str(data_dir), train=True, download=True)

    return fetch


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_files(source: Source, data_dir: str | Path) -> list[str]:
    folder = source.path(data_dir)
    return [name for name, _ in source.files if not (folder / name).is_file()]


def where_to_get(source: Source, data_dir: str | Path) -> str:
    return (
        f"place the files there (torchvision's layout), or run `psx data download {source.name}` on a machine "
        f"with internet and copy {Path(data_dir).expanduser()} here (PSX_DATA_DIR or paths.data_dir set the folder)"
    )


def require_files(source: Source, data_dir: str | Path, download: bool) -> None:
    """Make sure every file is there: download what is missing, or fail with what to do."""
    missing = missing_files(source, data_dir)
    if not missing:
        return
    folder = source.path(data_dir)
    if not download:
        raise PsxError(
            f"{source.name}: {', '.join(missing)} not found in {folder} (downloads are off: dataset.download=false); "
            + where_to_get(source, data_dir)
        )
    log.info("%s: downloading into %s", source.name, folder)
    fetch(source, data_dir, quiet=True)


def fetch(source: Source, data_dir: str | Path, quiet: bool = False) -> None:
    data_dir = Path(data_dir).expanduser()
    folder = source.path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # torchvision prints "Downloading ..." / "Failed to download (trying next)" on stdout.
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            source.fetch(data_dir)
    except Exception as e:  # no network, a mirror down, an md5 mismatch, a full disk, ...
        reason = " ".join(str(e).split()) or type(e).__name__
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise PsxError(
            f"{source.name}: data not found in {folder} and the download failed ({reason}); " + where_to_get(source, data_dir)
        ) from None
    still_missing = missing_files(source, data_dir)
    if still_missing:
        raise PsxError(f"{source.name}: the download left {', '.join(still_missing)} missing in {folder}")


def verify_files(source: Source, data_dir: str | Path) -> None:
    """Check every file against its published md5; a mismatch is an error, the file is not used."""
    folder = source.path(data_dir)
    for name, expected in source.files:
        actual = file_md5(folder / name)
        if actual != expected:
            raise PsxError(
                f"{source.name}: {folder / name} is corrupt (md5 {actual}, expected {expected}) and was not used; "
                f"delete it and run `psx data download {source.name}`"
            )


def remove_corrupt(source: Source, data_dir: str | Path) -> list[str]:
    """For `psx data download`: drop files whose md5 is wrong (and what was extracted from
    them), so the downloader fetches fresh copies instead of trusting them."""
    folder = source.path(data_dir)
    removed = []
    for name, expected in source.files:
        path = folder / name
        if path.is_file() and file_md5(path) != expected:
            path.unlink()
            if path.suffix == ".gz":
                path.with_suffix("").unlink(missing_ok=True)
            removed.append(name)
    return removed


def fingerprint(source: Source, data_dir: str | Path) -> dict[str, list[int]]:
    folder = source.path(data_dir)
    stats = {name: (folder / name).stat() for name, _ in source.files}
    return {name: [st.st_size, st.st_mtime_ns] for name, st in stats.items()}


def load_cache(path: Path, expect: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The cached tensors if the cache exists, is readable, and matches `expect`; else None."""
    import torch

    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except Exception as e:  # truncated or foreign file: rebuild rather than trust it
        log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, type(e).__name__)
        return None
    if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT:
        return None
    from psx.checkpoint import tensor_digest

    if cached.pop("digest", None) != tensor_digest(cached):  # edited or damaged since it was written
        log.warning("the data cache %s does not match its digest; rebuilding it", path)
        return None
    for key, value in expect.items():
        if key == "verified":
            if value and not cached.get("verified"):
                return None
        elif cached.get(key) != value:
            return None
    return cached


def save_cache(path: Path, content: dict[str, Any]) -> None:
    """Write atomically (temporary name, then rename); a read-only data folder only costs speed."""
    import torch

    from psx.atomic import atomic_path
    from psx.checkpoint import tensor_digest

    content = {"format": CACHE_FORMAT, **content}
    try:
        with atomic_path(path) as tmp:
            torch.save({**content, "digest": tensor_digest(content)}, tmp)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        log.warning("could not write the data cache %s (%s); the next run decodes again", path, e)


def cached_load(
    source: Source, data_dir: str | Path, download: bool, verify: bool,
    decode: Callable[[], dict[str, Any]], tag: str | None = None, params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decoded content of `source`: from the cache when it is current, else verified and decoded."""
    if data_dir is None:
        raise PsxError(f"{source.name} needs a data folder (paths.data_dir)")
    require_files(source, data_dir, download)
    path = source.cache_path(data_dir, tag)
    expect = {"sources": fingerprint(source, data_dir), "verified": verify, "params": params or {}}
    cached = load_cache(path, expect)
    if cached is not None:
        return cached
    if verify:
        verify_files(source, data_dir)
    else:
        log.warning(
            "%s: dataset.verify=false, so the files in %s were NOT checked against the published md5s",
            source.name, source.path(data_dir),
        )
    try:
        content = decode()
    except OSError as e:  # e.g. a read-only folder: torchvision reads MNIST from extracted copies beside the .gz
        raise PsxError(f"{source.name}: could not decode the files in {source.path(data_dir)} ({e}); "
                       f"psx needs write access there (or point PSX_DATA_DIR at a writable copy)") from None
    save_cache(path, {**content, **expect})
    return {**content, **expect}


def load(source: Source, data_dir: str | Path, download: bool = True, verify: bool = True) -> dict[str, Any]:
    """The decoded content of `source` (see cached_load), decoded by the source's own decoder."""
    return cached_load(source, data_dir, download, verify, lambda: source.decode(Path(data_dir).expanduser()))


def folder_size(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
