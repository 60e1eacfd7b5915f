"""DatasetEntry: what a data set module in psx/data/sets/ declares about itself."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from psx.data.spec import DataSpec
from psx.data.store import Source
from psx.errors import PsxError


def _no_check(cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class DatasetEntry:
    name: str                                 # `dataset=<name>`, and conf/dataset/<name>.yaml
    config: type                              # its typed arguments: a dataclass with defaults (the YAML's schema)
    spec: Callable[[Any], DataSpec]           # typed config -> what the data looks like, without loading it
    build: Callable[[Any, Optional[Path]], Any]  # typed config, data folder -> Data (train_size is applied after)
    about: str                                # one line for `psx data list`
    source: Optional[Source] = None           # the downloadable files it reads; None: bundled or built in memory
    check: Callable[[Any], None] = _no_check  # values that parse but cannot work, checked before anything loads

    def typed(self, cfg: Any) -> Any:
        """cfg (a DictConfig, a mapping or already the dataclass) as this data set's config dataclass,
        with the defaults filled in; a key it does not have or a wrong type is a PsxError."""
        if isinstance(cfg, self.config):
            return cfg
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(self.config), cfg))
        except OmegaConfBaseException as e:
            head = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise PsxError(f"invalid dataset config for {self.name}: {head}") from None

    @property
    def derived(self) -> bool:
        """Built from another data set's files (e.g. multi_mnist from MNIST's), cached beside them."""
        return self.source is not None and self.source.name != self.name

    def caches(self, data_dir: str | Path) -> list[Path]:
        """psx's decoded caches of this data set in the data folder (psx-<name>.pt, psx-<name>-<params>.pt)."""
        if self.source is None:
            return []
        folder = self.source.path(data_dir)
        return sorted([*folder.glob(f"psx-{self.name}.pt"), *folder.glob(f"psx-{self.name}-*.pt")])
