"""Several seeds of one configuration trained as one stacked model (see psx.stacked.fit).

    models = [build_seed_model(model_cfg, spec, seed, device) for seed in seeds]
    reason = stack_reason(trainer_cfg, models, task, example)   # None, or why they must train one by one
    if reason is None and stacking_pays(models, device):
        results = StackedTrainer(trainer_cfg, seeds, on_epoch, on_checkpoint).fit(models, data, task)
        # results[k]: seed k's FitResult (or the PsxError that ended it); models[k]: its best weights;
        # on_epoch(k, row), on_checkpoint(k, Trainer-format state); stop_requested as on Trainer

A sweep uses it from its launcher: psx.stacked.sweep groups the jobs that differ only in `seed`;
each job of a group keeps its own folder, summary.json, metrics and checkpoint, written as a single
run writes them, with only the fit shared.
"""
from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.func import functional_call, vmap

from psx.data.spec import DataSpec
from psx.data.tensors import Data
from psx.errors import PsxError
from psx.models import build_model
from psx.models.transfer import freeze, load_matching_weights
from psx.stacked.fit import StackedTrainer
from psx.stacked.layers import RUN_PER_SEED, MemoryFormatAsIs, stackable_template
from psx.tasks import Classification
from psx.trainer import FitResult

# Layers that draw random masks while training.
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

__all__ = ["StackedTrainer", "build_seed_model", "fit_stacked", "stack_reason", "stacking_pays"]


def build_seed_model(model_cfg: DictConfig, spec: DataSpec, seed: int, device: torch.device) -> nn.Module:
    """The model a single run of `seed` trains: the global RNG seeded just before it is built (as
    psx.train does; building the data draws nothing from it), then transfer and freezing."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, spec)
    if model_cfg.get("init_from") is not None:
        load_matching_weights(model, model_cfg.init_from)
    if model_cfg.get("freeze"):
        freeze(model, list(model_cfg.freeze))
    return model.to(device)


def stack_reason(trainer_cfg: DictConfig, models: list[nn.Module], task, example: torch.Tensor | None = None) -> str | None:
    """None if these models can train stacked with the result of training each alone; otherwise
    the reason they must train one by one. `example`: a few inputs, to check the model runs under vmap."""
    if len(models) < 2:
        return "there is only one seed"
    if type(task) is not Classification:
        return f"stacked training covers single-label classification, not {type(task).__name__}"
    if trainer_cfg.scheduler == "plateau":
        return "the plateau scheduler sets each seed's learning rate from its own validation metric"
    if trainer_cfg.precision != "fp32" or trainer_cfg.compile:
        return "stacked training runs in fp32 without torch.compile"
    if trainer_cfg.get("resume") is not None:
        return "a resumed run continues from its own checkpoint"
    model = models[0]
    if getattr(model, "training_hooks", False):
        return ("the model adds a penalty to its loss or changes at epoch starts (soft sharing, untie_at), "
                "which stacked training does not call")
    if any(True for _ in model.buffers()):
        return "the model has buffers (such as batch-norm statistics), which a vmapped forward cannot update"
    if any(isinstance(m, DROPOUT) and m.p > 0 for m in model.modules()):
        return "dropout draws its masks from the global RNG, in another order than separate runs"
    if example is not None:
        return _vmap_probe(models[:2], example)
    return None


# On a CPU a stack must be this deep before it beats the seeds one by one in a real sweep: the
# stack's own set-up (the vmap probe, every seed's model and evaluation) is paid before it gains.
CPU_MIN_SEEDS = 6


def stacking_pays(models: list[nn.Module], device: torch.device) -> bool:
    """Whether to stack these seeds by default (scripts/bench.py --only stacked measures it): on a
    GPU always, a small model's step being bound by kernel launches that the stack shares out; on a
    CPU for at least CPU_MIN_SEEDS seeds of a model without per-seed layers. A LocallyConnected2d
    runs once per seed in the stack anyway, so cnn_unshared gained little there, within the noise
    of the measurements, for K times the activation memory."""
    if torch.device(device).type == "cuda":
        return True
    return len(models) >= CPU_MIN_SEEDS and not any(isinstance(m, RUN_PER_SEED) for m in models[0].modules())


def _vmap_probe(models: list[nn.Module], example: torch.Tensor) -> str | None:
    from torch.func import stack_module_state

    template = stackable_template(models[0])
    params, buffers = stack_module_state(models)
    try:
        with torch.no_grad(), MemoryFormatAsIs():
            vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), in_dims=(0, 0, None))(params, buffers, example)
    except Exception as e:  # noqa: BLE001 - any failure means: train these seeds one by one
        return f"the model does not run under torch.func.vmap ({type(e).__name__}: {str(e).splitlines()[0]})"
    return None


def fit_stacked(
    model_cfg: DictConfig,
    trainer_cfg: DictConfig,
    data: Data,
    task,
    seeds: list[int],
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, dict], None] | None = None,
    on_checkpoint: Callable[[int, dict], None] | None = None,
) -> tuple[list[FitResult | PsxError], list[nn.Module]]:
    """Train `seeds` of one configuration together. Per seed (in order): its FitResult (or the
    PsxError that ended it) and its model, holding its best-validation weights. Raises PsxError
    with the reason when these seeds cannot be stacked (see stack_reason)."""
    device = torch.device(device)
    models = [build_seed_model(model_cfg, data.spec, seed, device) for seed in seeds]
    example = data.val.batch(slice(0, 2))[0].to(device)
    reason = stack_reason(trainer_cfg, models, task, example)
    if reason is not None:
        raise PsxError(f"seeds {', '.join(map(str, seeds))} cannot train stacked: {reason}")
    results = StackedTrainer(trainer_cfg, seeds, on_epoch, on_checkpoint).fit(models, data, task)
    return results, models
