"""Model families: the one place a family declares itself, and every table psx derives from it.

A family is one module in psx/models/families/ that defines `FAMILY = Family(...)`: its name, its
typed arguments (a dataclass with defaults, which is also the schema its YAML files extend), its
arms from most shared to least, the arm it measures sharing against, the kinds of data it
accepts, its own checks, and the network to build. Modules there are found with pkgutil, so a new
family is that module plus its conf/model/*.yaml files; `register` adds one from anywhere else.

This module imports neither torch nor the networks: validating and composing a config (the main
process of a sweep, `psx train --cfg job`) stays torch-free. A family's `network` may be given
as "module:Class", imported when a model is first built, for that reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, is_dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from psx.declarations import declarations, declared_named
from psx.errors import PsxError

# The schema group the model YAML files extend: `defaults: [/schema/model/<family>@_here_, _self_]`.
SCHEMA_GROUP = "schema/model"


@dataclass
class ModelConfig:
    """Keys every model has; a family's config extends this with its own typed arguments."""

    name: str = "model"  # the YAML file's name, e.g. cnn_shared (required in the YAML schema)
    family: str = "???"  # each family's config sets its own
    arm: str = "???"
    dropout: float = 0.0
    init_from: Optional[str] = None  # transfer: a run folder or checkpoint.pt whose matching weights start this model
    freeze: List[str] = field(default_factory=list)  # parameter-name prefixes to keep fixed, e.g. [features]


def default_mismatch(config: ModelConfig, spec, accepts: Tuple[str, ...]) -> str:
    """Why a model cannot train on a data set, when its family has no message of its own."""
    if spec.kind == "tokens":
        return f"{spec.name} is a word-level token stream and {config.name} takes images; choose a language model"
    if spec.kind == "multitask":
        return (f"{spec.name} has {len(spec.tasks)} tasks ({', '.join(spec.tasks)}) and {config.name} predicts one label; "
                f"choose a multi-task model, or train on one task with dataset.task={spec.tasks[0]}")
    return f"{config.name} accepts {', '.join(accepts)}, not {spec.kind}"


@dataclass(frozen=True)
class Family:
    name: str
    config: type                 # a ModelConfig subclass: the typed arguments and the YAML schema
    arms: Tuple[str, ...]        # most shared first
    reference_arm: str           # the arm that shares nothing: `shared` is arm != reference_arm
    accepts: Tuple[str, ...]     # data kinds (psx.data.spec: "images", "multitask", "tokens")
    network: Union[str, Callable[[Any, Any], Any]]  # (config, spec) -> nn.Module, or "module:attr" of one
    check: Optional[Callable[[Any], None]] = None    # raises PsxError for values that parse but cannot work
    mismatch: Optional[Callable[[Any, Any], str]] = None  # (config, spec) -> why this data does not fit

    def schema(self) -> ModelConfig:
        """The config as the YAML files' schema: the family fixed, name and arm required (MISSING).
        Built in Python, the typed config keeps its own defaults (its first, most shared arm)."""
        from omegaconf import MISSING

        return replace(self.config(), name=MISSING, family=self.name, arm=MISSING)

    def validate(self, config: ModelConfig) -> None:
        """One-line PsxError for a typed config this family cannot build."""
        if config.arm not in self.arms:
            raise PsxError(f"model.arm={config.arm!r} is not an arm of the {self.name} family ({', '.join(self.arms)})")
        if not 0.0 <= config.dropout < 1.0:
            raise PsxError(f"model.dropout must be in [0, 1), got {config.dropout}")
        if self.check is not None:
            self.check(config)

    def why_not(self, config: ModelConfig, spec) -> Optional[str]:
        """None if the family trains on this data kind, else the reason."""
        if spec.kind in self.accepts:
            return None
        reason = self.mismatch(config, spec) if self.mismatch else default_mismatch(config, spec, self.accepts)
        return f"model {config.name} cannot train on {spec.name}: {reason}"

    def builder(self) -> Callable[[Any, Any], Any]:
        if callable(self.network):
            return self.network
        module, attribute = self.network.split(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTERED: Dict[str, Family] = {}
_DISCOVERED = False


def register(family: Family) -> Family:
    """Add a family (families/ modules are found without this) and its schema to Hydra's ConfigStore."""
    if family.reference_arm not in family.arms:
        raise ValueError(f"family {family.name}: reference arm {family.reference_arm!r} is not one of {family.arms}")
    _REGISTERED[family.name] = family
    _store_schema(family)
    return family


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def known_families() -> Dict[str, Family]:
    """Every family: the modules in psx/models/families/ (imported once), then any registered."""
    global _DISCOVERED
    if not _DISCOVERED:
        for _module, family in declarations("psx.models.families", "FAMILY"):
            if isinstance(family, Family):
                register(family)
        _DISCOVERED = True
    return _REGISTERED


def family_named(name: Any) -> Family:
    return declared_named(known_families(), name, "model family")


def register_schemas() -> None:
    """Put every family's config in Hydra's ConfigStore (under schema/model/), before composing."""
    known_families()


def _store_schema(family: Family) -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=SCHEMA_GROUP, name=family.name, node=family.schema())


def from_before_arms(model_cfg: Any) -> Any:
    """A model config saved before families had arms (a `shared` flag; the transformer inside the
    lm family), as today's config, so that such a run can still be resumed; others as they are."""
    if "arm" in model_cfg or "shared" not in model_cfg:
        return model_cfg
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    family, shared = old.pop("family"), old.pop("shared")
    arch, share_layers = old.pop("arch", None), old.pop("share_layers", None)
    if arch == "transformer":  # `tied` stays: an option of both transformer arms
        family, arm = "transformer", "shared" if share_layers else "unshared"
    elif family == "lm":
        arm = "tied" if old.pop("tied") else "untied"
    else:
        arm = {"mlp": "dense", "mtl": "shared" if shared else "separate"}.get(family, "shared" if shared else "unshared")
    return {**old, "family": family, "arm": arm}


def typed_config(model_cfg: Any) -> Tuple[Family, ModelConfig]:
    """The family and its typed arguments, from a composed DictConfig (or an already typed config):
    the one place where configs become arguments."""
    if is_dataclass(model_cfg) and not isinstance(model_cfg, type):
        return family_named(model_cfg.family), model_cfg
    from omegaconf import OmegaConf

    model_cfg = from_before_arms(model_cfg)
    family = family_named(model_cfg.get("family"))
    merged = OmegaConf.merge(OmegaConf.structured(family.config), model_cfg)
    return family, OmegaConf.to_object(merged)


def require_positive(config: Any, keys: List[str]) -> None:
    for key in keys:
        if getattr(config, key) < 1:
            raise PsxError(f"model.{key} must be >= 1, got {getattr(config, key)}")


def require_positive_list(config: Any, key: str, allow_empty: bool = True) -> None:
    values = list(getattr(config, key))
    if not values and not allow_empty:
        raise PsxError(f"model.{key} must list at least one layer")
    if any(v < 1 for v in values):
        raise PsxError(f"model.{key} must hold positive integers, got {values}")
