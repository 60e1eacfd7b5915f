"""Schemas for the composed config, and the check that runs before any training.

Model families declare their own schema and checks (psx/models/families/); this module asks them.

Hydra already rejects overrides of keys that do not exist (the config is in struct mode);
these schemas also catch a typo or a wrong type inside a YAML file, and values that parse
but make no sense (a negative data size, an unknown optimizer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from psx.data.registry import check as check_dataset
from psx.data.registry import dataset_entry
from psx.errors import PsxError
from psx.federated.schema import FederatedSchema, check_federated
from psx.models.family import family_named, from_before_arms


class Optimizer(Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class Scheduler(Enum):
    none = "none"
    cosine = "cosine"
    step = "step"
    plateau = "plateau"


class ResumeDamaged(Enum):
    fail = "fail"
    restart = "restart"


class BudgetKind(Enum):
    epochs = "epochs"
    steps = "steps"


class Progress(Enum):
    auto = "auto"
    bar = "bar"
    lines = "lines"
    none = "none"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class DataPlacement(Enum):
    auto = "auto"
    device = "device"
    host = "host"


class DeviceType(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


@dataclass
class TrainerSchema:
    budget: BudgetKind = MISSING
    epochs: int = MISSING
    steps: Optional[int] = MISSING
    eval_every: Optional[int] = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    optimizer: Optimizer = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    scheduler: Scheduler = MISSING
    step_size: int = MISSING
    gamma: float = MISSING
    grad_clip: Optional[float] = MISSING
    patience: Optional[int] = MISSING
    progress: Progress = MISSING
    precision: Precision = MISSING
    compile: bool = MISSING
    deterministic: bool = MISSING
    checkpoint: bool = MISSING
    resume: Optional[str] = MISSING
    resume_damaged: ResumeDamaged = ResumeDamaged.fail
    stack_seeds: Any = MISSING  # auto | false | true; checked in _check_budget


@dataclass
class DeviceSchema:
    type: DeviceType = MISSING
    num_threads: Optional[int] = MISSING
    data: DataPlacement = MISSING
    reuse_host_memory: bool = MISSING


@dataclass
class CSVLoggerSchema:
    filename: str = MISSING


class WandbMode(Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbLoggerSchema:
    project: str = MISSING
    entity: Optional[str] = MISSING
    mode: Optional[WandbMode] = MISSING
    job_type: str = MISSING
    tags: List[str] = MISSING


@dataclass
class TensorBoardLoggerSchema:
    subdir: str = MISSING


@dataclass
class PathsSchema:
    data_dir: str = MISSING


LOGGER_SCHEMAS: Dict[str, type] = {
    "csv": CSVLoggerSchema, "wandb": WandbLoggerSchema, "tensorboard": TensorBoardLoggerSchema,
}
TOP_LEVEL_KEYS = {"model", "dataset", "trainer", "device", "logger", "seed", "paths", "federated"}


def _checked(section: Any, schema: Any, where: str) -> DictConfig:
    """Merge one config section onto its schema: unknown keys, wrong types and missing keys fail."""
    if not isinstance(section, DictConfig):
        raise PsxError(f"config section '{where}' must be a mapping, got {section!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), section)
        missing = sorted(OmegaConf.missing_keys(merged))  # resolves interpolations, which may fail
    except OmegaConfBaseException as e:
        raise PsxError(_explain(e, where)) from None
    if missing:
        raise PsxError(f"config '{where}' is missing: {', '.join(missing)}")
    return merged


def _explain(e: OmegaConfBaseException, where: str) -> str:
    # OmegaConf puts the useful text first and the key path in a later "full_key:" line.
    head = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    key = getattr(e, "full_key", None)
    return f"invalid {where}.{key}: {head}" if key else f"invalid config in '{where}': {head}"


def validate(cfg: DictConfig) -> None:
    """Raise PsxError with one clear line if the config cannot describe a sensible run."""
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL_KEYS)
    if unknown:
        raise PsxError(f"unknown top-level config key(s): {', '.join(unknown)}")
    if not isinstance(cfg.get("model"), DictConfig):
        raise PsxError(f"config section 'model' must be a mapping, got {cfg.get('model')!r}")
    model = from_before_arms(cfg.model)  # a run saved before arms may be resumed
    model = model if isinstance(model, DictConfig) else OmegaConf.create(model)
    family = family_named(model.get("family"))  # the family's typed config is the schema
    family.validate(OmegaConf.to_object(_checked(model, family.schema(), "model")))
    # Each data set's schema and rules are declared in its own module (psx/data/sets/).
    dataset = _checked(cfg.dataset, dataset_entry(cfg.dataset.get("name")).config, "dataset")
    trainer = _checked(cfg.trainer, TrainerSchema, "trainer")
    device = _checked(cfg.device, DeviceSchema, "device")
    _checked(cfg.paths, PathsSchema, "paths")
    for tracker, section in cfg.logger.items():
        if tracker not in LOGGER_SCHEMAS:
            raise PsxError(f"unknown logger {tracker!r} (known: {', '.join(LOGGER_SCHEMAS)})")
        _checked(section, LOGGER_SCHEMAS[tracker], f"logger.{tracker}")
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise PsxError(f"seed must be an integer, got {cfg.get('seed')!r}")

    _check_trainer(trainer)
    check_dataset(cfg.dataset)
    _check_eval_streams(cfg.dataset, trainer)
    if device.num_threads is not None and device.num_threads < 1:
        raise PsxError(f"device.num_threads must be >= 1 or null, got {device.num_threads}")
    if cfg.get("federated") is not None:  # configs saved before the group existed have none
        federated = OmegaConf.create(OmegaConf.to_container(cfg.federated, resolve=True))  # partition_seed: ${seed}
        check_federated(_checked(federated, FederatedSchema, "federated"), dataset.train_size)


def _check_trainer(trainer: DictConfig) -> None:
    _positive(trainer, ["epochs", "batch_size", "eval_batch_size", "step_size"], "trainer")
    for key in ("lr", "momentum", "weight_decay", "gamma", "grad_clip"):  # nan and inf fail only inside training
        if trainer[key] is not None and not math.isfinite(trainer[key]):
            raise PsxError(f"trainer.{key} must be a finite number, got {trainer[key]}")
    if trainer.lr <= 0:
        raise PsxError(f"trainer.lr must be positive, got {trainer.lr}")
    if not 0 <= trainer.momentum < 1:
        raise PsxError(f"trainer.momentum must be >= 0 and < 1, got {trainer.momentum}")
    if trainer.weight_decay < 0:
        raise PsxError(f"trainer.weight_decay must be >= 0, got {trainer.weight_decay}")
    scheduler = trainer.scheduler.value if isinstance(trainer.scheduler, Enum) else trainer.scheduler
    # The decay factor multiplies the learning rate: <= 0 makes it zero or negative, > 1 grows it.
    if scheduler == "step" and not 0 < trainer.gamma <= 1:
        raise PsxError(f"trainer.gamma (the step scheduler's decay factor) must be > 0 and <= 1, got {trainer.gamma}")
    if scheduler == "plateau" and not 0 < trainer.gamma < 1:
        raise PsxError(f"trainer.gamma (the plateau scheduler's decay factor) must be > 0 and < 1, got {trainer.gamma}")
    if trainer.grad_clip is not None and trainer.grad_clip <= 0:
        raise PsxError(f"trainer.grad_clip must be positive or null, got {trainer.grad_clip}")
    if trainer.patience is not None and trainer.patience < 1:
        raise PsxError(f"trainer.patience must be >= 1 or null, got {trainer.patience}")
    _check_budget(trainer)


def _check_budget(trainer: DictConfig) -> None:
    """trainer.steps and trainer.eval_every belong to a step budget, and it needs them set sensibly."""
    steps_budget = trainer.budget == BudgetKind.steps
    if steps_budget and (trainer.steps is None or trainer.steps < 1):
        raise PsxError(f"trainer.budget=steps needs trainer.steps >= 1, got {trainer.steps}")
    for key in ("steps", "eval_every"):
        if not steps_budget and trainer[key] is not None:
            raise PsxError(f"trainer.{key} is for trainer.budget=steps; with budget=epochs set trainer.epochs instead")
    if trainer.eval_every is not None and trainer.eval_every < 1:
        raise PsxError(f"trainer.eval_every must be >= 1 or null (once per pass), got {trainer.eval_every}")
    if trainer.stack_seeds not in ("auto", False, True):
        raise PsxError(f"trainer.stack_seeds must be auto, false or true, got {trainer.stack_seeds!r}")


def _check_eval_streams(dataset: DictConfig, trainer: DictConfig) -> None:
    """A token stream is evaluated as trainer.eval_batch_size parallel streams of at least 2 tokens each:
    a validation subset too short for that fails here rather than at the first validation."""
    val_tokens = dataset.get("val_tokens")
    if val_tokens is not None and val_tokens < 2 * trainer.eval_batch_size:
        raise PsxError(f"dataset.val_tokens={val_tokens} cannot fill trainer.eval_batch_size={trainer.eval_batch_size} "
                       "evaluation streams of at least 2 tokens; lower trainer.eval_batch_size or raise "
                       "dataset.val_tokens")


def _positive(section: DictConfig, keys: List[str], where: str) -> None:
    for key in keys:
        if section[key] < 1:
            raise PsxError(f"{where}.{key} must be >= 1, got {section[key]}")
