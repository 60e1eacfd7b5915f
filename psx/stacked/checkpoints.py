"""Each seed's slice of a stacked run as the checkpoint psx.trainer.Trainer writes for that seed
alone, so an interrupted stacked job resumes seed by seed through the ordinary single-run resume."""
from __future__ import annotations

from typing import Any

import torch

from psx.stacked.state import SeedRecord, seed_state


def _optimizer_slice(optimizer: torch.optim.Optimizer, index: int) -> dict[str, Any]:
    """The stacked optimizer's state_dict as a single model's optimizer holds it: per-parameter
    tensors shaped like the stacked parameter (momentum, Adam's moments) cut to slice `index`;
    shared scalars (Adam's step count) as they are. Parameter numbering is the same: both optimizers
    take the trainable parameters in the model's named_parameters() order."""
    stacked = optimizer.param_groups[0]["params"]
    full = optimizer.state_dict()
    state = {}
    for number, values in full["state"].items():
        shape = stacked[number].shape
        state[number] = {name: (value[index] if torch.is_tensor(value) and value.shape == shape else value).clone()
                         if torch.is_tensor(value) else value for name, value in values.items()}
    return {"state": state, "param_groups": full["param_groups"]}


def seed_checkpoint(record: SeedRecord, index: int, params, buffers, optimizer, scheduler, loop: dict[str, Any],
                    torch_rng: torch.Tensor) -> dict[str, Any]:
    """What Trainer saves at an epoch end (without the caller's extras such as the config).
    torch_rng: the global RNG state to record; stacked training never draws from it (dropout is
    refused), so it does not change the resumed run."""
    return {
        "completed": False,
        "model": seed_state(params, buffers, index),
        "optimizer": _optimizer_slice(optimizer, index),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {
            "shuffler": record.shuffler.get_state(),
            "augmenter": record.augmenter.get_state(),
            "torch": torch_rng,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "loop": {
            **loop, "stale": record.stale, "best_epoch": record.best_epoch, "best_val": record.best_val,
            "best_model": record.best_state, "history": list(record.history), "in_epoch": None,
        },
    }
