"""`psx inspect model=... dataset=...`: a model's parameter tensors and what sharing saves, without training."""
from __future__ import annotations

from collections import defaultdict

from torch import nn

from psx.models.hashed import HashedConv2d, HashedLinear
from psx.models.soft_shared import SoftSharedConv2d


def parameter_rows(model: nn.Module) -> list[dict]:
    """One row per unique tensor: name, shape, count, times reused per forward (may be fractional,
    e.g. a hashed layer's buckets), other names of it, and its kind of sharing (or "frozen")."""
    reuse = model.parameter_reuse() if hasattr(model, "parameter_reuse") else {}
    kinds = sharing_kinds(model)
    # Beside a frozen backbone, what trains is what each task adds (adapters, LoRA, its classifier).
    per_task = "per task" if any(not p.requires_grad for p in model.parameters()) else ""
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
            "kind": kinds.get(name, per_task) if p.requires_grad else "frozen",
        })
    return rows


def sharing_kinds(model: nn.Module) -> dict[str, str]:
    """How each tensor is shared beyond plain reuse: a soft layer's shared filter and per-position
    offsets, a hashed layer's buckets, and what the model states itself (`parameter_kinds()`, e.g.
    tensors pulled together across tasks, or the per-task tensors an adapter adds)."""
    kinds: dict[str, str] = {}
    for prefix, module in model.named_modules():
        at = f"{prefix}." if prefix else ""
        if isinstance(module, SoftSharedConv2d):
            kinds.update({f"{at}weight": "soft: shared W", f"{at}bias": "soft: shared b",
                          f"{at}offset": "soft: offsets D_p", f"{at}bias_offset": "soft: offsets d_p"})
        elif isinstance(module, (HashedLinear, HashedConv2d)):
            virtual = "x".join(map(str, module.virtual_shape))
            kinds[f"{at}buckets"] = f"hashed {virtual}"
    if hasattr(model, "parameter_kinds"):
        kinds.update(model.parameter_kinds())
    return kinds


def reuse_text(reuse: float) -> str:
    return "" if reuse == 1 else f"x{reuse:,.4g}" if reuse < 1e4 else f"x{reuse:,.0f}"


def print_inspection(model: nn.Module, title: str, model_cfg=None) -> None:
    """The table of tensors, then the totals; with the model's config, also its family and arm."""
    from rich.console import Console
    from rich.table import Table

    from psx.models import arm_fields, param_counts

    rows = parameter_rows(model)
    table = Table(title=title)
    for column, justify in [("parameter", "left"), ("shape", "left"), ("count", "right"),
                            ("reused", "right"), ("shared with", "left"), ("kind", "left")]:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row["name"], "x".join(map(str, row["shape"])), f"{row['count']:,}",
                      reuse_text(row["reuse"]), ", ".join(row["shared_with"]), row["kind"])
    counts = param_counts(model)
    console = Console()
    console.print(table)
    if getattr(model, "inspection_note", None):  # reuse the family's ratio leaves out, and why
        console.print(model.inspection_note)
    if model_cfg is not None:
        arm = arm_fields(model_cfg)
        console.print(f"family {arm['family']}, arm {arm['arm']} (reference arm: {arm['reference_arm']})")
    ratio = counts["params/unshared_equiv"] / counts["params/unique"]
    console.print(f"params/unique         {counts['params/unique']:>14,}")
    equiv = counts["params/unshared_equiv"]
    console.print(f"params/unshared_equiv {equiv:>14,}" if isinstance(equiv, int) else f"params/unshared_equiv {equiv:>17,.2f}")
    console.print(f"sharing ratio         {ratio:>14.2f}x  (unshared-equivalent / unique)")
