"""The Hydra application behind `psx train`, and the pre-flight check of its overrides."""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from psx.data.registry import register_schemas as register_dataset_schemas

CONFIG_NAME = "config"

# The schemas conf/dataset/*.yaml extend (through their defaults lists) must be in Hydra's
# ConfigStore before any composition, in this process and in every launcher's worker (which
# imports this module to unpickle hydra_train).
register_dataset_schemas()


def config_dir() -> Path:
    """conf/ ships inside the package (non-editable install) or sits beside it (source checkout)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"psx configs not found next to {package}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=CONFIG_NAME)
def hydra_train(cfg: DictConfig) -> float | None:
    from psx.train import run  # torch is imported only once a job actually runs

    return run(cfg)


# Sweep folders started in this process: the CLI reads their summaries afterwards, because
# launchers such as joblib or submitit run the jobs (and record their failures) elsewhere.
SWEEP_DIRS: list[str] = []


class RecordSweepDir(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SWEEP_DIRS.append(str(config.hydra.sweep.dir))
