"""Transfer: start a model from another run's weights, optionally with parts frozen."""
from __future__ import annotations

import logging

from torch import nn

from psx.checkpoint import load_checkpoint
from psx.errors import PsxError

log = logging.getLogger("psx")


def load_matching_weights(model: nn.Module, location: str) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; report what loaded and what did not."""
    source = load_source(location)
    loaded, skipped = matching_names(model, source, location)
    model.load_state_dict({name: source[name] for name in loaded}, strict=False)
    # A tensor the source lacks, or has in another shape, starts from this model's own initialisation.
    untouched = [name for name in model.state_dict() if name not in loaded]
    log.info("init_from %s: loaded %d tensors (%s)%s%s", location, len(loaded), ", ".join(loaded),
             f"; {len(untouched)} start from their own initialisation ({', '.join(untouched)})" if untouched else "",
             f"; {len(skipped)} of the source's not used ({', '.join(skipped)})" if skipped else "")
    return {"loaded": loaded, "skipped": skipped, "initialised": untouched}


def load_source(location: str) -> dict:
    """The weights model.init_from names; a missing or damaged checkpoint is one line naming the key."""
    try:
        return load_checkpoint(location)["model"]
    except PsxError as e:
        raise PsxError(f"model.init_from: {e}") from None


def matching_names(model: nn.Module, source: dict, location: str) -> tuple[list[str], list[str]]:
    """The source tensors that match the model by name and shape, and the others with why;
    PsxError if none does."""
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in source.items():
        if name not in own:
            skipped.append(f"{name} (not in this model)")
        elif own[name].shape != tensor.shape:
            skipped.append(f"{name} (shape {tuple(tensor.shape)} here {tuple(own[name].shape)})")
        else:
            loaded.append(name)
    if not loaded:
        raise PsxError(f"model.init_from={location}: no tensor matches this model by name and shape")
    return loaded, skipped


def freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Turn off gradients for parameters under each prefix (e.g. "features"); unknown prefixes fail."""
    frozen = []
    for prefix in prefixes:
        matched = [(name, p) for name, p in model.named_parameters() if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            top = sorted({name.split(".")[0] for name, _ in model.named_parameters()})
            raise PsxError(f"model.freeze: {prefix!r} names no parameters (top-level parts: {', '.join(top)})")
        for name, p in matched:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen
