"""`psx data list` and `psx data download NAME`."""
from __future__ import annotations

import logging
from pathlib import Path

from psx.data import store
from psx.errors import PsxError

# Every data set psx knows, in the order `psx data list` shows them.
BUNDLED = {"digits": "bundled with scikit-learn", "multi_digits": "built in memory from digits"}
DERIVED = {"multi_mnist": "mnist"}  # built from another set's files, cached beside them
NAMES = ["digits", "multi_digits", "mnist", "fashion_mnist", "cifar10", "ptb", "multi_mnist"]


def configured_data_dir() -> str:
    """paths.data_dir from the same config `psx train` composes (so the defaults never drift)."""
    from hydra import compose, initialize_config_dir

    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return str(compose("config").paths.data_dir)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n else "-"


def status(name: str, data_dir: str | Path) -> tuple[str, int, str]:
    """(status, bytes on disk, where) of one data set."""
    if name in BUNDLED:
        return "bundled", 0, BUNDLED[name]
    source = store.get_source(DERIVED.get(name, name))
    folder = source.path(data_dir)
    missing = len(store.missing_files(source, data_dir))
    total = len(source.files)
    if name in DERIVED:
        caches = sorted(folder.glob(f"psx-{name}-*.pt"))
        state = "ready" if caches else ("missing" if missing else f"buildable from {source.name}")
        return (state if not missing or caches else f"missing ({source.name} needed)"), sum(p.stat().st_size for p in caches), str(folder)
    if missing == total:
        return "missing", 0, str(folder)
    if missing:
        return f"partial ({total - missing}/{total} files)", store.folder_size(folder), str(folder)
    state = "ready" if source.cache_path(data_dir).is_file() else "present (not yet decoded)"
    derived = sum(p.stat().st_size for d, base in DERIVED.items() if base == name for p in folder.glob(f"psx-{d}-*.pt"))
    return state, store.folder_size(folder) - derived, str(folder)


def list_datasets(data_dir: str | Path) -> None:
    print(f"data folder: {Path(data_dir).expanduser()}   (paths.data_dir; set it with PSX_DATA_DIR)")
    print(f"{'name':<14} {'status':<30} {'size':>10}  where")
    for name in NAMES:
        state, size, where = status(name, data_dir)
        print(f"{name:<14} {state:<30} {_size(size):>10}  {where}")


def download(name: str, data_dir: str | Path) -> None:
    from psx.data.images import load_images
    from psx.data.text import load_ptb

    if name in BUNDLED:
        print(f"{name}: bundled, nothing to download")
        return
    known = [n for n in NAMES if n not in BUNDLED]
    if name not in known:
        raise PsxError(f"unknown data set {name!r} (downloadable: {', '.join(known)})")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = store.get_source(DERIVED.get(name, name))
    for bad in store.remove_corrupt(source, data_dir):
        print(f"{source.name}: removed corrupt {bad}; fetching a fresh copy")
    if store.missing_files(source, data_dir):
        print(f"{source.name}: downloading into {source.path(data_dir)}")
        store.fetch(source, data_dir)
    store.verify_files(source, data_dir)
    # Decode now, so the first training run starts from the cache.
    if source.name == "ptb":
        load_ptb(data_dir)
    else:
        load_images(source.name, data_dir)
    print(f"{source.name}: verified and ready in {source.path(data_dir)} ({_size(store.folder_size(source.path(data_dir)))})")
