"""One table row per run, whatever wrote it (a psx run folder, a W&B run): `make_record`.

Values are checked on the way in (checks.py): a completed run whose metrics are missing, not
numbers or impossible becomes status "damaged" with the reason, and is left out of the numbers.
Old summaries (before arms) get their arm from `shared`: "shared" or "unshared", reference
"unshared".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from psx.errors import PsxError
from psx.loggers import hydra_text
from psx.report import checks

# Fields a run record takes from its summary (summary.json, or a W&B run's summary). `make_record`
# adds the metrics (every "train/...", "val/...", "test/..." key) and the flattened config.
SUMMARY_FIELDS = (
    "status", "error", "problem", "model", "family", "arm", "reference_arm", "shared", "dataset", "train_size",
    "train_examples", "seed", "params/unique", "params/unshared_equiv", "params/trainable", "params/added_per_task",
    "sharing/ratio", "untied_at", "wall_seconds", "train_seconds", "selection_metric", "best_epoch", "epochs_completed",
    "budget", "steps", "stopped_early", "device",
    "torch_version", "psx_version",
)
METRIC_PREFIXES = ("train/", "val/", "test/")
# Where the short fields live in the flattened config, for sources whose summary lacks them.
CONFIG_FOR_FIELD = {
    "model": "model.name", "family": "model.family", "arm": "model.arm", "shared": "model.shared",
    "dataset": "dataset.name", "train_size": "dataset.train_size", "seed": "seed",
}
# Columns every run table has, first in summary.csv; the flattened config keys follow.
# stacked_seeds: how many seeds trained together as one stacked model with this run (1: alone).
LEADING_COLUMNS = ("run", "source", "path", *SUMMARY_FIELDS, "stacked_seeds")


@dataclass
class RunSet:
    """Everything a report is made from."""

    runs: pd.DataFrame  # one row per run: LEADING_COLUMNS, metrics, flattened config keys
    curves: pd.DataFrame  # one row per (run, epoch): "run", "epoch" and the per-epoch metrics
    config_keys: list[str] = field(default_factory=list)  # the flattened config keys among the columns
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # {"dir", "command", "config"} per sweep


def make_record(summary: dict[str, Any], config: dict[str, Any], *, run: str, source: str, path: str,
                problems: list[str] | None = None) -> dict[str, Any]:
    """One table row from a summary (summary.json's layout, or metrics at the top level as W&B
    keeps them) and a flattened config. Short fields missing from the summary come from the config.
    `problems`: what the caller already found wrong with the run's files (kept in "problem")."""
    record: dict[str, Any] = dict(config)
    record.update(run=run, source=source, path=path)
    damage: list[str] = []
    for key in SUMMARY_FIELDS:
        value = summary.get(key)
        if value is None and key in CONFIG_FOR_FIELD:
            value = config.get(CONFIG_FOR_FIELD[key])
        value, wrong = checks.field_value(key, value)
        record[key] = value
        damage += wrong
    metrics = {k: v for k, v in summary.items() if k.startswith(METRIC_PREFIXES)}
    nested = summary.get("metrics")
    if isinstance(nested, dict):
        metrics.update(nested)
    elif nested is not None:
        damage.append(f"summary.json: 'metrics' is a {type(nested).__name__}, not an object")
    for key, value in metrics.items():
        number, wrong = checks.metric_value(key, value)
        if number is not None:
            record[key] = number
        if not key.startswith("train/"):  # the numbers compared are val and test; a train value only plots
            damage += wrong
    stacked = summary.get("stacked")
    seeds = stacked.get("seeds") if isinstance(stacked, dict) else None
    record["stacked_seeds"] = len(seeds) if isinstance(seeds, list) and seeds else 1
    if not isinstance(record["status"], str) or not record["status"]:
        record["status"] = "unknown"
    set_arm(record)
    return judge(record, damage, problems or [])


def judge(record: dict[str, Any], damage: list[str], problems: list[str]) -> dict[str, Any]:
    """A completed run with damaged values is left out ("damaged"); the others keep their status."""
    if record["status"] == "completed":
        damage += checks.missing_metrics(record)
        if damage:
            record["status"], record["error"] = "damaged", "; ".join(damage)
    if problems:
        record["problem"] = "; ".join(problems)
    return record


def set_arm(record: dict[str, Any]) -> None:
    """arm, reference_arm and the legacy `shared` bool, from whichever of them the run recorded."""
    shared = record.get("shared")
    if isinstance(shared, str) and shared.lower() in ("true", "false"):
        shared = shared.lower() == "true"
    if record.get("arm") is None and isinstance(shared, bool):  # a summary from before arms
        record["arm"] = "shared" if shared else "unshared"
        record["reference_arm"] = record.get("reference_arm") or "unshared"
    if record.get("reference_arm") is None and record.get("arm") is not None and shared is False:
        record["reference_arm"] = record["arm"]  # the one unshared arm is the reference
    if record.get("arm") is not None and record.get("reference_arm") is not None:
        shared = record["arm"] != record["reference_arm"]
    record["shared"] = shared if isinstance(shared, bool) else None
    unique, equivalent = record.get("params/unique"), record.get("params/unshared_equiv")
    if record.get("sharing/ratio") is None and unique and equivalent:  # a summary from before sharing/ratio
        record["sharing/ratio"] = equivalent / unique


def build_runset(records: list[dict[str, Any]], curves: list[pd.DataFrame], sweeps: list[dict[str, Any]]) -> RunSet:
    if not records:
        raise PsxError("no runs found")
    metric_keys = _metric_keys(records)
    config_keys = sorted({k for r in records for k in r} - set(LEADING_COLUMNS) - metric_keys)
    records = sorted(records, key=lambda r: (r["source"], _natural(r["path"])))  # job 2 before job 10
    fill_reference_arms(records)
    for record in records:  # group keys must be hashable: a list in a config becomes its text
        for key in config_keys:
            if isinstance(record.get(key), (list, dict)):
                record[key] = hydra_text(record[key])
    runs = pd.DataFrame.from_records(records)
    runs = runs.reindex(columns=[*LEADING_COLUMNS, *sorted(metric_keys), *config_keys])
    for column in [*LEADING_COLUMNS, *config_keys]:  # 200, not the 200.0 pandas makes when a run lacks it
        if runs[column].dtype.kind == "f" and runs[column].dropna().map(float.is_integer).all():
            runs[column] = pd.Series([None if pd.isna(v) else int(v) for v in runs[column]], dtype=object)
    table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "epoch"])
    return RunSet(runs=runs, curves=table, config_keys=config_keys, sweeps=sweeps)


def fill_reference_arms(records: list[dict[str, Any]]) -> None:
    """A run that knows its arm but not its family's reference arm (a W&B run whose summary lacks
    it) takes the reference arm that other runs of the same family recorded, when they agree."""
    known: dict[Any, set] = {}
    for record in records:
        if record.get("family") is not None and record.get("reference_arm") is not None:
            known.setdefault(record["family"], set()).add(record["reference_arm"])
    for record in records:
        references = known.get(record.get("family"), set())
        if record.get("arm") is not None and record.get("reference_arm") is None and len(references) == 1:
            record["reference_arm"] = next(iter(references))
            record["shared"] = record["arm"] != record["reference_arm"]


def _natural(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _metric_keys(records: list[dict[str, Any]]) -> set[str]:
    return {k for r in records for k in r if k.startswith(METRIC_PREFIXES) or k.startswith("params/")} - set(SUMMARY_FIELDS)
