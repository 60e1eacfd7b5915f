"""Models see the data only through its DataSpec; families declare themselves in psx/models/families/.

Importing this package does not import torch (composing and validating a config stays torch-free);
building a model does.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from psx.errors import PsxError
from psx.models.family import Family, ModelConfig, family_named, known_families, register, typed_config

if TYPE_CHECKING:
    from torch import nn

    from psx.data.spec import DataSpec

__all__ = ["Family", "ModelConfig", "known_families", "family_named", "register", "typed_config", "build_model",
           "check_fits", "param_counts", "arm_fields", "sharing_summary"]


def build_model(cfg: Any, spec: "DataSpec") -> "nn.Module":
    """A composed model config (DictConfig) or a family's typed config -> the network for this data."""
    family, config = typed_config(cfg)
    family.validate(config)
    reason = family.why_not(config, spec)
    if reason is not None:
        raise PsxError(reason)
    return family.builder()(config, spec)


def check_fits(cfg: Any, spec: "DataSpec") -> None:
    """Raise the PsxError build_model would, without allocating anything (parameters on the meta device)."""
    import torch

    with torch.device("meta"):
        build_model(cfg, spec)


def _whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def param_counts(model: "nn.Module") -> dict[str, float]:
    """`params/unique` counts each tensor once however often it is reused (named_parameters()
    already deduplicates shared Parameters); `params/unshared_equiv` is what the same topology
    would have with no sharing: each tensor times the number of places that use it, as the
    model's `parameter_reuse()` states (a conv filter bank: its output positions; a recurrent
    cell: its time steps; a tied embedding: 2). A reuse may be fractional (a hashed layer's
    buckets); the sum is an int whenever it is whole."""
    reuse = model.parameter_reuse() if hasattr(model, "parameter_reuse") else {}
    named = list(model.named_parameters())
    unknown = set(reuse) - {name for name, _ in named}
    if unknown:  # a typo here would silently under-count
        raise ValueError(f"parameter_reuse names unknown parameters: {sorted(unknown)}")
    # 0 is allowed: a soft layer's shared filter, which its locally connected twin does not have.
    bad = {name: times for name, times in reuse.items() if not (math.isfinite(times) and times >= 0)}
    if bad:
        raise ValueError(f"parameter_reuse must be finite and >= 0: {bad}")
    return {
        "params/unique": sum(p.numel() for _, p in named),
        "params/unshared_equiv": _whole(sum(p.numel() * reuse.get(name, 1) for name, p in named)),
        "params/trainable": sum(p.numel() for _, p in named if p.requires_grad),
    }


def arm_fields(model_cfg: Any) -> dict[str, Any]:
    """family, arm, reference_arm and the legacy `shared` (= arm != reference_arm) of a model
    config. A config from before arms existed (a `shared` flag, no `arm`) reads as arm
    "shared"/"unshared" against "unshared"."""
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda key, default=None: getattr(model_cfg, key, default)
    family_name, arm = get("family"), get("arm")
    if arm is None:
        shared = get("shared")
        arm, reference = ("shared" if shared else "unshared"), "unshared"
    else:
        known = known_families().get(family_name)
        reference = known.reference_arm if known is not None else None
    return {"family": family_name, "arm": arm, "reference_arm": reference,
            "shared": None if reference is None else arm != reference}


def sharing_summary(model: "nn.Module", model_cfg: Any) -> dict[str, Any]:
    """What summary.json records about a model's sharing: arm_fields, param_counts, and
    `sharing/ratio` = params/unshared_equiv / params/unique (1.0: nothing shared); with init_from,
    `params/added_per_task` (the trainable tensors: a copy of all for full fine-tuning, the head, or
    the adapters and classifier)."""
    counts = param_counts(model)
    ratio = counts["params/unshared_equiv"] / counts["params/unique"] if counts["params/unique"] else None
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda key, default=None: getattr(model_cfg, key, default)
    if get("init_from") is not None:  # adapting a backbone to a task: what the task adds is what it trains
        counts["params/added_per_task"] = counts["params/trainable"]
    return {**arm_fields(model_cfg), **counts, "sharing/ratio": ratio}
