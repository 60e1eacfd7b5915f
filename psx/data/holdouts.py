"""The one rule for held-out parts (validation, test), checked from the config before anything
loads and again by the loaders once the number of examples is known. numpy- and torch-free."""
from __future__ import annotations

from psx.errors import PsxError


def check_holdouts(sizes: dict[str, int], num_classes: int, total: int | None = None) -> None:
    """The rule for every held-out part (validation, test): at least one example per class each,
    and, once the number of examples is known, at least one per class left to train on."""
    for key, size in sizes.items():
        if size < num_classes:
            raise PsxError(f"dataset.{key} must hold at least one example per class (>= {num_classes}), got {size}")
    if total is not None and sum(sizes.values()) > total - num_classes:
        keys = " + ".join(f"dataset.{key}" for key in sizes)
        raise PsxError(f"{keys} = {sum(sizes.values())} leave too few of the {total} examples to train on "
                       f"(at most {total - num_classes}, so each class keeps one)")
