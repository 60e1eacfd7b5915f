"""`psx inspect model=... dataset=...`: a model's parameter tensors and what sharing saves, without training."""
from __future__ import annotations

from collections import defaultdict

from torch import nn


def parameter_rows(model: nn.Module) -> list[dict]:
    """One row per unique tensor: name, shape, count, times reused per forward, other names of it."""
    reuse = model.parameter_reuse() if hasattr(model, "parameter_reuse") else {}
    aliases: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases[id(p)].append(name)
    rows = []
    for name, p in model.named_parameters():  # each shared Parameter once, under its first name
        rows.append({
            "name": name,
            "shape": tuple(p.shape),
            "count": p.numel(),
            "reuse": reuse.get(name, 1),
            "shared_with": [alias for alias in aliases[id(p)] if alias != name],
            "trainable": p.requires_grad,
        })
    return rows


def print_inspection(model: nn.Module, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from psx.models import param_counts

    rows = parameter_rows(model)
    table = Table(title=title)
    for column, justify in [("parameter", "left"), ("shape", "left"), ("count", "right"),
                            ("reused", "right"), ("shared with", "left")]:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row["name"], "x".join(map(str, row["shape"])), f"{row['count']:,}",
                      f"x{row['reuse']}" if row["reuse"] > 1 else "", ", ".join(row["shared_with"]))
    counts = param_counts(model)
    console = Console()
    console.print(table)
    ratio = counts["params/unshared_equiv"] / counts["params/unique"]
    console.print(f"params/unique         {counts['params/unique']:>14,}")
    console.print(f"params/unshared_equiv {counts['params/unshared_equiv']:>14,}")
    console.print(f"sharing ratio         {ratio:>14.2f}x  (unshared-equivalent / unique)")
