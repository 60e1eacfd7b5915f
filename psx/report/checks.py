"""What may be in a run record: every value is checked before it is counted.

A metric that is not a number, is NaN or infinite, or lies outside its possible range (an
accuracy of 99.0) is damage: the run is listed with the reason and left out of the numbers.
"""
from __future__ import annotations

import math
from typing import Any

from psx.loggers import hydra_text

# Possible values per metric name (the part after the split: "test/acc/left" -> "acc").
RANGES = {"acc": (0.0, 1.0), "loss": (0.0, math.inf), "ppl": (1.0, math.inf), "nll": (0.0, math.inf)}
# Summary fields that are counts or seconds: a number >= 0, or absent.
NUMERIC_FIELDS = ("params/unique", "params/unshared_equiv", "params/trainable", "params/added_per_task", "sharing/ratio",
                  "untied_at", "wall_seconds", "train_seconds", "train_examples", "best_epoch", "epochs_completed")
TEXT_FIELDS = ("status", "error", "selection_metric", "device", "torch_version", "psx_version")


def shown(value: Any) -> str:
    """A value as a reason quotes it: short, one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_value(key: str, value: Any) -> tuple[float | None, list[str]]:
    """(the metric as a float, or None if it cannot count; what is wrong with it)."""
    if not is_number(value):
        return None, [f"{key} is {shown(value)}, not a number"]
    value = float(value)
    if not math.isfinite(value):
        return None, [f"{key} is {value}"]
    low, high = RANGES.get(key.split("/")[1] if "/" in key else key, (-math.inf, math.inf))
    if not low <= value <= high:
        return None, [f"{key} = {value:g} is outside its possible range [{low:g}, {high:g}]"]
    return value, []


def field_value(key: str, value: Any) -> tuple[Any, list[str]]:
    """A summary field as the report can use it (hashable, typed), and what is wrong with it."""
    if value is None:
        return None, []
    if key in NUMERIC_FIELDS:
        if not is_number(value) or not math.isfinite(value) or value < 0:
            return None, [f"{key} is {shown(value)}, not a count"]
        return value, []
    if key in TEXT_FIELDS:
        return value if isinstance(value, str) else shown(value), []
    if key == "shared":
        return (value if isinstance(value, bool) else None), []
    if isinstance(value, (list, tuple, dict)):  # group keys must be hashable
        return hydra_text(value), []
    if isinstance(value, float) and not math.isfinite(value):
        return None, []
    return value, []


def missing_metrics(record: dict[str, Any]) -> list[str]:
    """A completed run must have a validation or test metric to count."""
    if any(k.startswith(("val/", "test/")) and is_number(v) for k, v in record.items()):
        return []
    return ["no val or test metric recorded"]
