"""Where psx's Hydra configs are: a module of its own so that code reading one YAML file (the data
registry, `psx data`) needs neither Hydra's app nor the schemas it registers."""
from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config"


def config_dir() -> Path:
    """conf/ ships inside the package (non-editable install) or sits beside it (source checkout)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"psx configs not found next to {package}")
