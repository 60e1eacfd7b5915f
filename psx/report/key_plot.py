"""The metric against any one key of the runs (`psx report --x KEY`): a sharing method's own axis,
such as the soft-sharing strength, the hashing compression, the number of key/value heads, or the
parameters an adapter adds per task.

One panel per dataset; a line per arm (the other --by keys) and training-set size, at the mean over
seeds with ± std bars. Grid keys (a few values, some of them possibly 0) are evenly spaced in
order; other numbers (parameter counts) are on a log axis. On a grid axis, an arm that ran at only
one value of the key while others vary it (e.g. the hard-shared relative of a soft sweep, at the
default strength) is drawn as a horizontal line across the panel, and its label says where it ran.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from psx.report.aggregate import as_objects, lower_is_better, sort_key
from psx.report.tables import is_missing, size_label

GRID_VALUES = 10  # at most this many distinct values: a grid axis


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def key_means(runs: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """Mean, std and n of `column` per value of `keys` among the completed runs that have it."""
    frame = runs[(runs["status"] == "completed") & pd.to_numeric(runs[column], errors="coerce").notna()].copy()
    frame[column] = frame[column].astype(float)
    for key in keys:
        frame[key] = as_objects(frame[key])
    stats = frame.groupby(keys, dropna=False, sort=False)[column].agg(["mean", "std", "count"]).reset_index()
    examples = frame.groupby(keys, dropna=False, sort=False)["train_examples"].first().reset_index(drop=True)
    shared = frame.groupby(keys, dropna=False, sort=False)["shared"].first().reset_index(drop=True)
    return stats.assign(train_examples=examples, shared=shared)


def plot_metric_vs_key(runs: pd.DataFrame, by: list[str], metric: str, split: str, x: str, out: Path,
                       dataset_key: str, size_key: str, style) -> Path | None:
    """The figure, or None when no completed run has both the metric and a number for `x`."""
    column = f"{split}/{metric}"
    if x not in runs or column not in runs:
        return None
    line_keys = [k for k in by if k not in (dataset_key, size_key, x)]
    keys = list(dict.fromkeys([dataset_key, *line_keys, size_key, x]))
    stats = key_means(runs, keys, column)
    stats = stats[stats[x].map(is_number)]
    if stats.empty:
        return None
    grid = stats[x].nunique() <= GRID_VALUES and x in by
    datasets = sorted(stats[dataset_key].unique(), key=sort_key)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.8 * len(datasets), 4.6), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        panel = stats[stats[dataset_key] == dataset]
        draw_panel(ax, panel, line_keys, size_key, x, grid, style)
        low, high = int(panel["count"].min()), int(panel["count"].max())
        ax.set_title(f"{dataset}: {split} {metric} vs {x}\n(mean ± std over seeds, n = "
                     f"{low if low == high else f'{low}–{high}'} per point)")
        ax.set_ylabel(f"{split} {metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / f"{split}_{metric.replace('/', '_')}_vs_{x.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_panel(ax, panel: pd.DataFrame, line_keys: list[str], size_key: str, x: str, grid: bool, style) -> None:
    values = sorted(panel[x].unique(), key=sort_key)
    position = {v: i for i, v in enumerate(values)} if grid else {v: v for v in values}
    for i, (_, rows) in enumerate(panel.groupby([*line_keys, size_key], dropna=False, sort=False)):
        rows = rows.sort_values(x, key=lambda s: s.map(sort_key))
        first = rows.iloc[0].to_dict()
        name = " ".join(str(first[k]) for k in line_keys if not is_missing(first[k])) or "all runs"
        label = f"{name}, train size {size_label(first[size_key], first['train_examples'])}"
        kind = style(first.get("shared"))
        if grid and len(rows) == 1 and len(values) > 1:  # ran at one value only: a reference across the axis
            mean, std = first["mean"], np.nan_to_num(first["std"])
            ax.axhline(mean, color=f"C{i}", linestyle=kind["linestyle"], label=f"{label} (at {x}={first[x]:g} only)")
            ax.axhspan(mean - std, mean + std, color=f"C{i}", alpha=0.12, linewidth=0)
            continue
        ax.errorbar([position[v] for v in rows[x]], rows["mean"], yerr=np.nan_to_num(rows["std"].astype(float)),
                    color=f"C{i}", capsize=3, label=label, **kind)
    if grid:
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.set_xlabel(f"{x} (the values run, evenly spaced)")
    else:
        if all(v > 0 for v in values):
            ax.set_xscale("log")
        ax.set_xlabel(f"{x}" + (" (log scale)" if all(v > 0 for v in values) else ""))
