"""Every data set psx knows, read from the declarations of the modules in psx/data/sets/.

A data set is one module there that declares `DATASETS = [DatasetEntry(...)]` (name, typed
config, spec, builder, source files), plus its conf/dataset/<name>.yaml. Everything else psx
needs (the config schemas Hydra composes with, validation, `psx data list`, downloads) is
derived from those declarations, so nothing else changes when a data set is added.

The modules are imported to read their declarations, so they import torch only inside
functions: listing the data sets or checking a config never loads torch.
"""
from __future__ import annotations

import functools
from typing import Any

from psx.data.entry import DatasetEntry
from psx.declarations import declarations, declared_named
from psx.errors import PsxError


@functools.lru_cache(maxsize=None)
def entries() -> dict[str, DatasetEntry]:
    """Every declared data set by name, in the order of their modules (alphabetical) and declarations."""
    found: dict[str, DatasetEntry] = {}
    for module_name, declared in declarations("psx.data.sets", "DATASETS"):
        for entry in declared:
            if entry.name in found:
                raise RuntimeError(f"data set {entry.name!r} is declared twice (psx/data/sets/{module_name}.py)")
            found[entry.name] = entry
    return found


def dataset_entry(name: Any) -> DatasetEntry:
    return declared_named(entries(), name, "dataset")


SCHEMA_GROUP = "schema/dataset"


def register_schemas() -> None:
    """Store every data set's config dataclass in Hydra's ConfigStore as schema/dataset/<name>, which
    conf/dataset/<name>.yaml lists first in its defaults (`- /schema/dataset/<name>@_here_`, Hydra's
    "structured config schema for YAML files" pattern, in a group of its own so the schemas are not
    offered as `dataset=` options). Must run before Hydra composes: psx.hydra_app does it on import."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for entry in entries().values():
        store.store(group=SCHEMA_GROUP, name=entry.name, node=entry.config)


def check(cfg: Any) -> Any:
    """Check a dataset config before anything loads: its keys and types against the data set's
    schema, then the rules every data set shares, then its own. Returns the typed config."""
    entry = dataset_entry(cfg.get("name") if hasattr(cfg, "get") else cfg.name)
    typed = entry.typed(cfg)
    train_size = getattr(typed, "train_size", None)
    if train_size is not None and train_size < 1:
        raise PsxError(f"dataset.train_size must be a positive integer or null, got {train_size}")
    entry.check(typed)
    return typed


def default_config(name: str, **overrides: Any):
    """The DictConfig `dataset=<name>` composes to (the schema's defaults, then conf/dataset/<name>.yaml),
    with overrides applied: for tests and scripts that build a data set without composing a whole config."""
    from omegaconf import OmegaConf

    from psx.conf_dir import config_dir

    yaml = OmegaConf.load(config_dir() / "dataset" / f"{name}.yaml")
    yaml.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(dataset_entry(name).config), yaml, overrides)
