"""`psx data list`, `psx data download NAME` and `psx data clean [NAME]`.

Torch-free until something is decoded: listing reads only the data set declarations
(psx.data.registry) and the file system.
"""
from __future__ import annotations

import logging
from pathlib import Path

import psx.data.store as store
from psx.data.entry import DatasetEntry
from psx.data.registry import dataset_entry, entries
from psx.errors import PsxError


USAGE = "psx data list [--dir DIR] | psx data download NAME [--dir DIR] | psx data clean [NAME] [--dir DIR]"


def main(args: list[str]) -> int:
    """`psx data ...`; PsxError for what the user can fix (argparse prints its own usage errors)."""
    import argparse

    parser = argparse.ArgumentParser(prog="psx data", usage=USAGE)  # argparse adds "usage: " itself
    parser.add_argument("action", choices=["list", "download", "clean"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--dir", help="data folder (default: paths.data_dir, i.e. $PSX_DATA_DIR or ~/.cache/psx/data)")
    parsed = parser.parse_args(args)
    if parsed.action == "list" and parsed.name:
        raise PsxError(f"`psx data list` takes no name (usage: {USAGE})")
    if parsed.action == "download" and not parsed.name:
        raise PsxError(f"`psx data download` needs a data set name (usage: {USAGE})")
    data_dir = parsed.dir or configured_data_dir()
    if parsed.action == "list":
        list_datasets(data_dir)
    elif parsed.action == "download":
        download(parsed.name, data_dir)
    else:
        clean(parsed.name, data_dir)
    return 0


def configured_data_dir() -> str:
    """paths.data_dir as `psx train` composes it: read from conf/config.yaml with OmegaConf (which
    resolves its ${oc.env:...}), without composing the whole config through Hydra."""
    from omegaconf import OmegaConf

    from psx.conf_dir import config_dir

    return str(OmegaConf.load(config_dir() / "config.yaml").paths.data_dir)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n else "-"


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def decoded_files(entry: DatasetEntry, data_dir: str | Path) -> list[Path]:
    """What psx made from a data set's files and may delete: its decoded caches and, for the set that
    owns the source files, the decompressed copies beside the archives (never the archives)."""
    if entry.source is None:
        return []
    folder = entry.source.path(data_dir)
    made = entry.caches(data_dir) + sorted(folder.glob(f".psx-{entry.name}-*.tmp"))  # + leftovers of killed writers
    if not entry.derived:
        made += [p for p in entry.source.extracted(data_dir) if p.is_file()]
        made += sorted(p for p in folder.glob(".*.tmp") if not p.name.startswith(".psx-") or p.name.startswith(f".psx-{entry.name}.pt"))
    return made


def status(entry: DatasetEntry, data_dir: str | Path) -> tuple[str, int, str]:
    """(status, bytes of the published files, where) of one data set."""
    source = entry.source
    if source is None:
        return "bundled", 0, entry.about
    folder = source.path(data_dir)
    missing = len(store.missing_files(source, data_dir))
    total = len(source.files)
    published = _bytes([folder / name for name, _ in source.files])
    if entry.derived:
        if entry.caches(data_dir):
            return "ready", 0, str(folder)
        return (f"missing ({source.name} needed)" if missing else f"buildable from {source.name}"), 0, str(folder)
    if missing == total:
        return "missing", 0, str(folder)
    if missing:
        return f"partial ({total - missing}/{total} files)", published, str(folder)
    return ("ready" if entry.caches(data_dir) else "present (not yet decoded)"), published, str(folder)


def list_datasets(data_dir: str | Path) -> None:
    print(f"data folder: {Path(data_dir).expanduser()}   (paths.data_dir; set it with PSX_DATA_DIR)")
    print(f"{'name':<14} {'status':<30} {'files':>10} {'decoded':>10}  where")
    made_total = 0
    for entry in entries().values():
        state, size, where = status(entry, data_dir)
        made = _bytes(decoded_files(entry, data_dir))
        made_total += made
        print(f"{entry.name:<14} {state:<30} {_size(size):>10} {_size(made):>10}  {where}")
    if made_total:
        print(f"decoded: psx's caches and extracted copies ({_size(made_total)}); `psx data clean [NAME]` removes them")


def download(name: str, data_dir: str | Path) -> None:
    if name not in entries():
        downloadable = [n for n, e in entries().items() if e.source is not None]
        raise PsxError(f"unknown data set {name!r} (downloadable: {', '.join(downloadable)})")
    entry = entries()[name]
    source = entry.source
    if source is None:
        print(f"{name}: {entry.about}; nothing to download")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for bad in store.remove_corrupt(source, data_dir):
        print(f"{source.name}: removed corrupt {bad}; fetching a fresh copy")
    if store.missing_files(source, data_dir):
        print(f"{source.name}: downloading into {source.path(data_dir)}")
        store.fetch(source, data_dir)
    store.verify_files(source, data_dir)
    store.load(source, data_dir)  # decode now, so the first training run starts from the cache
    size = _bytes([source.path(data_dir) / n for n, _ in source.files])
    print(f"{source.name}: verified and ready in {source.path(data_dir)} ({_size(size)})")


def clean(name: str | None, data_dir: str | Path) -> None:
    """Delete psx's decoded caches and extracted copies of one data set (or of all): they are
    rebuilt from the verified archives on the next run. The archives themselves stay."""
    chosen = [dataset_entry(name)] if name is not None else list(entries().values())
    freed = 0
    for entry in chosen:
        made = decoded_files(entry, data_dir)
        for path in made:
            freed += path.stat().st_size
            path.unlink()
        if made:
            print(f"{entry.name}: removed {len(made)} file(s) from {entry.source.path(data_dir)}")
    print(f"freed {_size(freed) if freed else '0 MB'}; the published files were kept")
