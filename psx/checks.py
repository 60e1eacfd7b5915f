"""What psx checks with torch before a run or sweep starts, after the configs composed and
validated: each model fits its data (built on the meta device, nothing allocated), the device
and precision are usable, and the data files are there (downloaded once, if allowed)."""
from __future__ import annotations

from psx.errors import PsxError


def check_runnable(configs) -> None:
    """Raise PsxError with one clear line for the first config that cannot run."""
    from psx.data import describe, require
    from psx.device import check_precision, resolve_device
    from psx.models import check_fits

    for cfg in configs:
        check_fits(cfg.model, describe(cfg.dataset))  # model vs data shape/kind
        check_precision(cfg.trainer.precision, resolve_device(cfg.device))
    needed = {(cfg.dataset.name, cfg.paths.data_dir, cfg.dataset.get("download")): cfg for cfg in configs}
    for cfg in needed.values():
        require(cfg.dataset, cfg.paths.data_dir)


def runnable_or_reason(configs) -> str | None:
    """check_runnable for another process (a joblib worker): None, or the error's line."""
    try:
        check_runnable(configs)
    except PsxError as e:
        return str(e)
    return None
