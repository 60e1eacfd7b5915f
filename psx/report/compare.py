"""Arms against their family's reference arm: paired differences, intervals and verdicts.

Within one family and one group of the other --by keys (e.g. the same dataset and training-set
size), every arm is compared with the family's reference arm (cnn: unshared; lm: untied; ...):
gap = arm − reference on the test metric (val when there is no test metric).

Runs of the two arms that share a seed and a training subset (dataset, train size, subset and
split seeds) are pairs; with two pairs or more the gap is the mean paired difference, else the
arms are treated as unpaired (Welch) and the row says so. The verdicts hold together across all
rows of the report: Holm's correction at a family-wise alpha of 0.05.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from psx.report import stats
from psx.report.aggregate import MODEL_KEYS, as_objects, lower_is_better, normalise, sort_key

# What makes two runs of different arms a pair: the same values of these (where recorded).
PAIR_KEYS = ("seed", "dataset", "train_size", "dataset.name", "dataset.train_size", "dataset.subset_seed",
             "dataset.split_seed")
ARM_KEYS = (*MODEL_KEYS, "arm", "family", "shared", "reference_arm", "model.family", "model.arm", "model.shared")
NO_DIFFERENCE = "no detectable difference"
READING = ("gap = arm − reference; [low, high] is its 95% confidence interval (t interval on the paired "
           "differences; Welch's where runs could not be paired): an interval that excludes 0 means the data "
           "rule out no difference at that size, and the verdict says so only where that holds for all {m} "
           "comparisons together (Holm, family-wise α = 0.05). Where it does not, 'seeds for this gap' is how many "
           "seeds per arm would detect a gap of the observed size (or --min-effect) with 80% power at the strictest "
           "Holm level.")


def metric_column(runs: pd.DataFrame, metric: str) -> str:
    test = f"test/{metric}"
    return test if test in runs and runs[test].notna().any() else f"val/{metric}"


def compare(runs: pd.DataFrame, by: list[str], metric: str, min_effect: float | None = None) -> pd.DataFrame:
    """One row per (group of the other --by keys, family, arm other than the reference)."""
    arm_key = next((k for k in by if k in MODEL_KEYS), "arm" if "arm" in by else None)
    column = metric_column(runs, metric)
    if arm_key is None or column not in runs:
        return pd.DataFrame()
    pair_by = [k for k in by if k not in ARM_KEYS]
    frame = runs[(runs["status"] == "completed") & runs["family"].notna() & runs["arm"].notna()].copy()
    frame = frame[pd.to_numeric(frame[column], errors="coerce").notna()]
    for key in {*pair_by, arm_key, *(k for k in PAIR_KEYS if k in frame)}:
        frame[key] = frame[key].map(normalise).astype(object)
    rows = []
    groups = frame.groupby([*pair_by, "family"], dropna=False, sort=False) if len(frame) else []
    for _, group in groups:
        references = group[group["arm"] == group["reference_arm"]]
        for reference_name, reference in references.groupby(arm_key, dropna=False, sort=False):
            for arm_name, arm in group[group["arm"] != group["reference_arm"]].groupby(arm_key, dropna=False, sort=False):
                row = {k: group[k].iloc[0] for k in pair_by}
                row.update(family=group["family"].iloc[0], arm=arm["arm"].iloc[0], reference_arm=reference["arm"].iloc[0],
                           model=arm_name, reference_model=reference_name, metric=column)
                row.update(difference(arm, reference, column))
                rows.append(row)
    rows.sort(key=lambda r: (*(sort_key(r[k]) for k in pair_by), str(r["family"]), str(r["model"])))
    table = pd.DataFrame.from_records(rows)
    for key in pair_by:  # 200, not the 200.0 pandas makes of a column holding a None (the full set)
        if key in table:
            table[key] = as_objects(table[key])
    return verdicts(table, metric, min_effect)


def pair_key(run: dict[str, Any]) -> tuple:
    return tuple(normalise(run.get(k)) for k in PAIR_KEYS)


def difference(arm: pd.DataFrame, reference: pd.DataFrame, column: str) -> dict[str, Any]:
    """The gap between two arms' runs: paired when at least two runs of each share a pair key."""
    arm_values = {pair_key(r): float(r[column]) for r in arm.to_dict("records")}
    ref_values = {pair_key(r): float(r[column]) for r in reference.to_dict("records")}
    ambiguous = len(arm_values) < len(arm) or len(ref_values) < len(reference)  # two runs on one seed
    common = sorted(set(arm_values) & set(ref_values), key=lambda k: tuple(sort_key(v) for v in k))
    if len(common) >= 2 and not ambiguous:
        result = stats.paired(np.array([arm_values[k] for k in common]), np.array([ref_values[k] for k in common]))
        unpaired = len(arm) + len(reference) - 2 * len(common)
    else:
        result = stats.welch(arm[column].astype(float).to_numpy(), reference[column].astype(float).to_numpy())
        unpaired = len(arm) + len(reference)
    examples = pd.to_numeric(pd.concat([arm["train_examples"], reference["train_examples"]]), errors="coerce")
    ratio = pd.to_numeric(arm["sharing/ratio"], errors="coerce").median()
    return {
        "train_examples": examples.mean(), "sharing/ratio": ratio,
        "mean_arm": float(arm[column].astype(float).mean()), "mean_reference": float(reference[column].astype(float).mean()),
        "gap": result.mean, "ci_low": result.low, "ci_high": result.high, "boot_low": result.boot_low,
        "boot_high": result.boot_high, "p": result.p, "method": result.method, "n_pairs": len(common) if result.method == "paired" else 0,
        "n_arm": len(arm), "n_reference": len(reference), "unpaired_runs": unpaired, "spread": result.spread,
    }


def verdicts(table: pd.DataFrame, metric: str, min_effect: float | None) -> pd.DataFrame:
    """p_holm, the verdict per row, and where nothing was detected, how many seeds would resolve
    min_effect (or the observed gap) at the strictest Holm level (alpha / number of comparisons)."""
    if table.empty:
        return table
    table["p_holm"] = stats.holm(table["p"].tolist())
    tested = int(table["p"].notna().sum())
    lower = lower_is_better(metric)
    verdict, seeds = [], []
    for row in table.to_dict("records"):
        if math.isnan(row["p_holm"]):
            verdict.append("too few runs")
            seeds.append(None)
        elif row["p_holm"] < stats.ALPHA:
            arm_wins = (row["gap"] < 0) if lower else (row["gap"] > 0)
            verdict.append(f"{row['model'] if arm_wins else row['reference_model']} better")
            seeds.append(None)
        else:
            verdict.append(NO_DIFFERENCE)
            effect = min_effect if min_effect is not None else row["gap"]
            seeds.append(stats.seeds_needed(effect, row["spread"], row["method"], stats.ALPHA / max(tested, 1)))
    table["verdict"] = verdict
    table["seeds_needed"] = pd.Series(seeds, index=table.index, dtype=object)
    table.attrs["comparisons"] = tested
    return table
