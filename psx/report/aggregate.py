"""Runs -> groups: mean and sample standard deviation over seeds (compare.py pairs the arms).

Statistics use completed runs only; runs that failed, were interrupted or are still running are
counted per group ("not_completed", shown as "left out") and listed by the report, never dropped silently.
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
# Keys that name the model: when grouping by one of them, a family's arms can be compared.
MODEL_KEYS = ("model", "model.name")
# What a row says about its arm when all its runs agree (None when they do not).
ARM_FIELDS = ("family", "arm", "reference_arm", "shared")
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
        raise PsxError("no run has val or test metrics")
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
            raise PsxError(f"unknown --by key '{key}' (summary fields: model, family, arm, dataset, "
                           f"train_size, seed, status; config keys: {shown})")
    return by


def normalise(value: Any) -> Any:
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
    return pd.Series([normalise(v) for v in series], index=series.index, dtype=object)


def sort_key(value: Any) -> tuple:
    """None (e.g. train_size = the full set) last; numbers by value, before strings. Normalised
    first: a NaN (pandas' None in a float column) would leave a list unsorted, np.int64 is a number."""
    value = normalise(value)
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _only(values: pd.Series) -> Any:
    """The group's single value, or None when its runs disagree."""
    unique = values.dropna().unique()
    return normalise(unique[0]) if len(unique) == 1 else None


NUMBERS = ("params/unique", "params/unshared_equiv", "sharing/ratio", "wall_seconds", "train_examples")


def aggregate(runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """One row per group: n (completed runs), not_completed, val/test metric mean and std, params,
    mean wall time per run (a stacked run's wall time is its group's, so it counts once per seed
    in it), and train_examples (the actual training-set size, for plots)."""
    frame = runs.copy()
    for key in by:
        frame[key] = frame[key].map(normalise).astype(object)
    done = frame["status"] == "completed"
    columns = [c for c in (f"val/{metric}", f"test/{metric}") if c in frame]
    for column in [*columns, *NUMBERS]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").where(done)
    frame["_done"] = done.astype(int)
    if "stacked_seeds" in frame:
        frame["wall_seconds"] /= pd.to_numeric(frame["stacked_seeds"], errors="coerce").fillna(1)

    rows = []
    for key, group in frame.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {k: normalise(v) for k, v in zip(by, key)}
        row["n"] = int(group["_done"].sum())
        row["not_completed"] = int(len(group) - row["n"])
        for column in columns:
            row[f"{column} mean"] = group[column].mean()
            row[f"{column} std"] = group[column].std(ddof=1)  # sample std; NaN for n = 1
        row["params/unique"] = group["params/unique"].median()
        row["params/unshared_equiv"] = group["params/unshared_equiv"].median()
        row["sharing/ratio"] = group["sharing/ratio"].median()
        row["wall_seconds mean"] = group["wall_seconds"].mean()
        row["train_examples"] = group["train_examples"].mean()
        row.update({name: _only(group[name]) for name in ARM_FIELDS})
        rows.append(row)
    rows.sort(key=lambda r: tuple(sort_key(r[k]) for k in by))
    table = pd.DataFrame.from_records(rows)
    for key in [*by, *ARM_FIELDS]:
        if key in table:
            table[key] = as_objects(table[key])
    return table


def mixed_keys(runs: pd.DataFrame, config_keys: list[str], by: list[str]) -> list[str]:
    """Config keys (other than seeds) whose values differ between runs of one group: the
    aggregate mixes them, which the user should know and may want to add to --by. A key that
    equals the seed in every run (federated.partition_seed: ${seed}) is the seed again, not a mix."""
    frame = runs[runs["status"] == "completed"]
    candidates = [k for k in config_keys if k not in by and k != "seed" and k in frame
                  and not _copies_seed(frame, k)]
    if frame.empty or not candidates:
        return []
    keys = frame[by].map(lambda v: repr(normalise(v)))
    values = frame[candidates].map(lambda v: None if normalise(v) is None else repr(normalise(v)))  # a run
    # without a config (a damaged config.yaml) mixes nothing
    counts = pd.concat([keys, values], axis=1).groupby(by)[candidates].nunique()
    return [k for k in candidates if (counts[k] > 1).any()]


def _copies_seed(frame: pd.DataFrame, key: str) -> bool:
    """Whether `key` holds the run's seed in every run of the frame."""
    if "seed" not in frame or frame.empty:
        return False
    return all(normalise(v) == normalise(seed) for v, seed in zip(frame[key], frame["seed"]))
