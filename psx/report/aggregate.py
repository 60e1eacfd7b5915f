"""Runs -> groups: mean and sample standard deviation over seeds, and the shared - unshared gap.

Statistics use completed runs only; runs that failed, were interrupted or are still running are
counted per group ("not completed") and listed by the report, never dropped silently.
std is the sample standard deviation (ddof=1), so it is undefined (NaN, shown as "–") for n = 1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from psx.errors import PsxError

# One row per (dataset, model, training-set size) unless --by says otherwise.
DEFAULT_BY = ["dataset", "model", "train_size"]
# Keys that name the model: when grouping by one of them, shared and unshared arms can be paired.
MODEL_KEYS = ("model", "model.name")
# Metrics where lower is better; everything else (acc, f1, ...) is higher-is-better.
LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "nll", "bpc", "err", "error", "wer", "cer")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


def available_metrics(runs: pd.DataFrame) -> list[str]:
    """Metric names reported for val or test: "acc", "loss", "ppl", "acc/<task>", ..."""
    names = {c.split("/", 1)[1] for c in runs.columns if c.startswith(("val/", "test/"))}
    return sorted(n for n in names if runs[[c for c in (f"val/{n}", f"test/{n}") if c in runs]].notna().any().any())


def resolve_metric(runs: pd.DataFrame, metric: str | None) -> str:
    """The metric to report, without its split: --metric, else the runs' selection metric."""
    available = available_metrics(runs)
    if not available:
        raise PsxError("no run has val or test metrics (did every run fail? see the failed runs above)")
    if metric is None:
        chosen = runs["selection_metric"].dropna()
        metric = chosen.mode().iloc[0] if len(chosen) else ("acc" if "acc" in available else available[0])
    name = metric.removeprefix("val/").removeprefix("test/")
    if name not in available:
        raise PsxError(f"unknown metric '{metric}' (available: {', '.join(available)})")
    return name


def resolve_by(runs: pd.DataFrame, config_keys: list[str], by: list[str] | None) -> list[str]:
    by = list(by or DEFAULT_BY)
    for key in by:
        if key not in runs.columns or (key in config_keys and runs[key].isna().all()):
            shown = ", ".join(config_keys[:40]) + (", ..." if len(config_keys) > 40 else "")
            raise PsxError(f"unknown --by key '{key}' (summary fields: model, family, shared, dataset, "
                           f"train_size, seed, status; config keys: {shown})")
    return by


def _normalise(value: Any) -> Any:
    """Group keys: NaN -> None, 200.0 -> 200 (pandas turns int columns with a None into floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_objects(series: pd.Series) -> pd.Series:
    """A key column as Python values: None for missing (None == None matches, unlike NaN) and 50
    rather than the 50.0 pandas makes of an int column holding a None."""
    return pd.Series([_normalise(v) for v in series], index=series.index, dtype=object)


def sort_key(value: Any) -> tuple:
    """None (e.g. train_size = the full set) last; numbers by value, before strings."""
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _only(values: pd.Series) -> Any:
    """The group's single value, or None when its runs disagree."""
    unique = values.dropna().unique()
    return _normalise(unique[0]) if len(unique) == 1 else None


def aggregate(runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """One row per group: n (completed runs), not_completed, val/test metric mean and std, params,
    mean wall time, and train_examples (the actual training-set size, for plots)."""
    frame = runs.copy()
    for key in by:
        frame[key] = frame[key].map(_normalise).astype(object)
    done = frame["status"] == "completed"
    columns = [c for c in (f"val/{metric}", f"test/{metric}") if c in frame]
    for column in [*columns, "params/unique", "params/unshared_equiv", "wall_seconds", "train_examples"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").where(done)
    frame["_done"] = done.astype(int)

    rows = []
    for key, group in frame.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {k: _normalise(v) for k, v in zip(by, key)}
        row["n"] = int(group["_done"].sum())
        row["not_completed"] = int(len(group) - row["n"])
        for column in columns:
            row[f"{column} mean"] = group[column].mean()
            row[f"{column} std"] = group[column].std(ddof=1)  # sample std; NaN for n = 1
        row["params/unique"] = group["params/unique"].median()
        row["params/unshared_equiv"] = group["params/unshared_equiv"].median()
        row["wall_seconds mean"] = group["wall_seconds"].mean()
        row["train_examples"] = group["train_examples"].mean()
        row["family"] = _only(group["family"])
        row["shared"] = _only(group["shared"])
        rows.append(row)
    rows.sort(key=lambda r: tuple(sort_key(r[k]) for k in by))
    table = pd.DataFrame.from_records(rows)
    for key in [*by, "family", "shared"]:
        if key in table:
            table[key] = as_objects(table[key])
    return table


def mixed_keys(runs: pd.DataFrame, config_keys: list[str], by: list[str]) -> list[str]:
    """Config keys (other than seeds) whose values differ between runs of one group: the
    aggregate mixes them, which the user should know and may want to add to --by."""
    frame = runs[runs["status"] == "completed"]
    candidates = [k for k in config_keys if k not in by and k != "seed" and k in frame]
    if frame.empty or not candidates:
        return []
    keys = frame[by].map(lambda v: repr(_normalise(v)))
    values = frame[candidates].map(lambda v: repr(_normalise(v)))
    counts = pd.concat([keys, values], axis=1).groupby(by)[candidates].nunique()
    return [k for k in candidates if (counts[k] > 1).any()]


def gaps(agg: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """shared - unshared on the test metric, for every pair of arms of one family that agree on
    all other grouping keys (e.g. the same dataset and train size). gap_se combines the two
    standard errors: sqrt(std_s^2/n_s + std_u^2/n_u)."""
    model_key = next((k for k in by if k in MODEL_KEYS), None)
    column = f"test/{metric}" if f"test/{metric} mean" in agg else f"val/{metric}"
    if model_key is None or agg.empty or f"{column} mean" not in agg:
        return pd.DataFrame()
    pair_by = [k for k in by if k not in (*MODEL_KEYS, "family", "shared", "model.family", "model.shared")]
    rows = []
    arms = agg[agg["family"].notna() & agg["shared"].notna() & (agg["n"] > 0)]
    for _, group in arms.groupby([*pair_by, "family"], dropna=False, sort=False):
        for _, s in group[group["shared"] == True].iterrows():  # noqa: E712 (object column)
            for _, u in group[group["shared"] == False].iterrows():  # noqa: E712
                se = math.sqrt(s[f"{column} std"] ** 2 / s["n"] + u[f"{column} std"] ** 2 / u["n"])
                rows.append({
                    **{k: s[k] for k in pair_by},
                    "family": s["family"],
                    "shared_model": s[model_key],
                    "unshared_model": u[model_key],
                    "train_examples": s["train_examples"],
                    "metric": column,
                    "shared_mean": s[f"{column} mean"],
                    "unshared_mean": u[f"{column} mean"],
                    "gap": s[f"{column} mean"] - u[f"{column} mean"],
                    "gap_se": se,
                    "n_shared": s["n"],
                    "n_unshared": u["n"],
                })
    return pd.DataFrame.from_records(rows)
