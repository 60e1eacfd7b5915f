"""What psx checks with torch before a run or sweep starts, after the configs composed and
validated: each model fits its data (built on the meta device, nothing allocated), the device
and precision are usable, and the data files are there (downloaded once, if allowed)."""
from __future__ import annotations

import os

from psx.errors import PsxError


# Training holds each parameter about four times (weights, gradients, two Adam moments), fp32.
BYTES_PER_TRAINED_PARAMETER = 16


def check_runnable(configs) -> None:
    """Raise PsxError with one clear line for the first config that cannot run."""
    from psx.data import describe, require
    from psx.device import check_precision, resolve_device

    for cfg in configs:
        check_model(cfg.model, describe(cfg.dataset))
        check_precision(cfg.trainer.precision, resolve_device(cfg.device))
    needed = {(cfg.dataset.name, cfg.paths.data_dir, cfg.dataset.get("download")): cfg for cfg in configs}
    for cfg in needed.values():
        require(cfg.dataset, cfg.paths.data_dir)
    check_train_sizes(configs)


def check_model(model_cfg, spec) -> None:
    """The model fits its data and this machine's memory, its init_from loads and matches, and
    its freeze prefixes name parameters: built on the meta device, nothing allocated."""
    import torch

    from psx.models import build_model
    from psx.models.transfer import freeze, load_source, matching_names

    with torch.device("meta"):
        model = build_model(model_cfg, spec)
    count = sum(p.numel() for p in model.parameters())
    need, have = count * BYTES_PER_TRAINED_PARAMETER, host_memory()
    if have and need > have:
        raise PsxError(f"model {model_cfg.name} has {count:,} parameters: training it needs about "
                       f"{need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB")
    if model_cfg.get("init_from") is not None:
        matching_names(model, load_source(model_cfg.init_from), model_cfg.init_from)
    if model_cfg.get("freeze"):
        freeze(model, list(model_cfg.freeze))


def host_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_train_sizes(configs) -> None:
    """A single run's dataset.train_size that its training split cannot give fails here, not in a
    run folder: the data set is loaded once (from its decoded cache, usually)."""
    from psx.data import build_data

    if len(configs) != 1:  # in a sweep, a size that does not fit fails its own job and the sweep goes on
        return
    (cfg,) = configs
    if cfg.dataset.get("train_size"):
        build_data(cfg.dataset, data_dir=cfg.paths.data_dir)


def runnable_or_reason(configs) -> str | None:
    """check_runnable for another process (a joblib worker): None, or the error's line."""
    try:
        check_runnable(configs)
    except PsxError as e:
        return str(e)
    return None
