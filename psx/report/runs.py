"""Find run folders and load them into one table: one row per run, whatever wrote it.

A psx run folder holds summary.json, .hydra/config.yaml and metrics.csv. W&B runs (local folders
or fetched from the server, see from_wandb.py) go through the same `make_record`, so the rest of
the report never asks where a run came from.
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from psx.errors import PsxError

# Fields a run record takes from its summary (summary.json, or a W&B run's summary). `make_record`
# adds the metrics (every "train/...", "val/...", "test/..." key) and the flattened config.
SUMMARY_FIELDS = (
    "status", "error", "model", "family", "shared", "dataset", "train_size", "train_examples", "seed",
    "params/unique", "params/unshared_equiv", "wall_seconds", "train_seconds", "selection_metric",
    "best_epoch", "epochs_completed", "device", "torch_version", "psx_version",
)
METRIC_PREFIXES = ("train/", "val/", "test/")
# Where the short fields live in the flattened config, for sources whose summary lacks them.
CONFIG_FOR_FIELD = {
    "model": "model.name", "family": "model.family", "shared": "model.shared",
    "dataset": "dataset.name", "train_size": "dataset.train_size", "seed": "seed",
}
# Columns every run table has, first in summary.csv; the flattened config keys follow.
LEADING_COLUMNS = ("run", "source", "path", *SUMMARY_FIELDS)


@dataclass
class RunSet:
    """Everything a report is made from."""

    runs: pd.DataFrame  # one row per run: LEADING_COLUMNS, metrics, flattened config keys
    curves: pd.DataFrame  # one row per (run, epoch): "run", "epoch" and the per-epoch metrics
    config_keys: list[str] = field(default_factory=list)  # the flattened config keys among the columns
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # {"dir", "command", "config"} per sweep


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"name": "cnn"}} -> {"model.name": "cnn"}; lists become their Hydra spelling "[8, 16]"."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(tree, (list, tuple)):
        tree = "[" + ", ".join(str(v) for v in tree) + "]"
    return {prefix[:-1]: tree}


def make_record(summary: dict[str, Any], config: dict[str, Any], *, run: str, source: str, path: str) -> dict[str, Any]:
    """One table row from a summary (summary.json's layout, or metrics at the top level as W&B
    keeps them) and a flattened config. Short fields missing from the summary come from the config."""
    record: dict[str, Any] = dict(config)
    record.update(run=run, source=source, path=path)
    for key in SUMMARY_FIELDS:
        value = summary.get(key)
        if value is None and key in CONFIG_FOR_FIELD:
            value = config.get(CONFIG_FOR_FIELD[key])
        record[key] = value
    metrics = {k: v for k, v in summary.items() if k.startswith(METRIC_PREFIXES)}
    metrics.update(summary.get("metrics") or {})
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            record[key] = float(value)
    record["status"] = record["status"] or "unknown"
    return record


def build_runset(records: list[dict[str, Any]], curves: list[pd.DataFrame], sweeps: list[dict[str, Any]]) -> RunSet:
    if not records:
        raise PsxError("no runs found")
    config_keys = sorted({k for r in records for k in r} - set(LEADING_COLUMNS) - _metric_keys(records))
    metrics = sorted(_metric_keys(records))
    records = sorted(records, key=lambda r: (r["source"], _natural(r["path"])))  # job 2 before job 10
    runs = pd.DataFrame.from_records(records)
    runs = runs.reindex(columns=[*LEADING_COLUMNS, *metrics, *config_keys])
    for column in [*LEADING_COLUMNS, *config_keys]:  # 200, not the 200.0 pandas makes when a run lacks it
        if runs[column].dtype.kind == "f" and runs[column].dropna().map(float.is_integer).all():
            runs[column] = pd.Series([None if pd.isna(v) else int(v) for v in runs[column]], dtype=object)
    table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "epoch"])
    return RunSet(runs=runs, curves=table, config_keys=config_keys, sweeps=sweeps)


def _natural(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _metric_keys(records: list[dict[str, Any]]) -> set[str]:
    return {k for r in records for k in r if k.startswith(METRIC_PREFIXES) or k.startswith("params/")} - set(SUMMARY_FIELDS)


# --- discovery ---------------------------------------------------------------------------------


def default_path(cwd: Path) -> Path:
    """The most recent sweep under ./outputs/multirun, else the most recent single run under ./outputs.
    Folder names are <date>/<time-with-microseconds>, so the newest sorts last."""
    outputs = cwd / "outputs"
    sweeps = sorted(p for p in outputs.glob("multirun/*/*") if p.is_dir())
    if sweeps:
        return sweeps[-1]
    singles = sorted(p.parent for p in outputs.glob("*/*/summary.json") if p.parent.parent.name != "multirun")
    if singles:
        return singles[-1]
    raise PsxError(f"no runs found under {outputs} (run `psx train -m ...` first, or give a folder: psx report PATH)")


def is_wandb_run_dir(path: Path, files: list[str]) -> bool:
    """A W&B run folder: wandb/offline-run-*/ or wandb/run-*/, with its transaction log or files/."""
    return path.name.startswith(("offline-run-", "run-")) and (
        any(f.endswith(".wandb") for f in files) or (path / "files" / "wandb-summary.json").exists()
    )


def discover(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(psx run folders, W&B run folders) below the paths. A folder with summary.json is a psx run
    and is not searched further (a W&B folder inside a psx run is the same run)."""
    psx_runs: dict[Path, None] = {}
    wandb_runs: dict[Path, None] = {}
    for root in paths:
        if not root.exists():
            raise PsxError(f"no such folder: {root}")
        if root.is_file():
            root = root.parent
        for dirpath, dirnames, files in os.walk(root):  # does not follow symlinks (wandb/latest-run)
            here = Path(dirpath)
            if "summary.json" in files:
                psx_runs[here.resolve()] = None
                dirnames.clear()
            elif is_wandb_run_dir(here, files):
                wandb_runs[here.resolve()] = None
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if d not in (".hydra", "report", "__pycache__"))
    return list(psx_runs), list(wandb_runs)


# --- psx run folders ---------------------------------------------------------------------------


def load_psx_run(run_dir: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """A run folder as (record, per-epoch curves or None)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        summary = {"status": "unreadable", "error": f"summary.json: {e}"}
    config_file = run_dir / ".hydra" / "config.yaml"
    config = flatten(yaml.safe_load(config_file.read_text()) or {}) if config_file.exists() else {}
    record = make_record(summary, config, run=name, source="psx", path=str(run_dir))
    curves = None
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists() and metrics_csv.stat().st_size > 0:
        curves = pd.read_csv(metrics_csv)
        curves.insert(0, "run", name)
    return record, curves


def read_sweep(sweep_dir: Path) -> dict[str, Any] | None:
    """The command and config of a Hydra sweep, from its multirun.yaml."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    multirun = yaml.safe_load(path.read_text()) or {}
    overrides = ((multirun.get("hydra") or {}).get("overrides") or {}).get("task") or []
    config = {k: v for k, v in multirun.items() if k != "hydra"}
    return {
        "dir": str(sweep_dir),
        "command": " ".join(["psx train -m", *(shlex.quote(str(o)) for o in overrides)]),
        "config": yaml.safe_dump(config, sort_keys=False),
    }


def load_local(paths: list[Path]) -> RunSet:
    """Every run below the paths: psx run folders and W&B run folders."""
    psx_dirs, wandb_dirs = discover(paths)
    if not psx_dirs and not wandb_dirs:
        raise PsxError(f"no runs found under {', '.join(str(p) for p in paths)} (no summary.json or W&B run folder)")
    base = _common_parent(psx_dirs + wandb_dirs)
    records, curves, sweeps = [], [], []
    for run_dir in psx_dirs:
        record, curve = load_psx_run(run_dir, _name(run_dir, base))
        records.append(record)
        if curve is not None:
            curves.append(curve)
    for sweep_dir in sorted({d.parent for d in psx_dirs}):
        sweep = read_sweep(sweep_dir)
        if sweep:
            sweeps.append(sweep)
    if wandb_dirs:
        from psx.report.from_wandb import load_wandb_dir

        for run_dir in wandb_dirs:
            record, curve = load_wandb_dir(run_dir, _name(run_dir, base))
            records.append(record)
            if curve is not None:
                curves.append(curve)
    return build_runset(records, curves, sweeps)


def _common_parent(dirs: list[Path]) -> Path:
    parent = Path(os.path.commonpath([str(d) for d in dirs]))
    return parent.parent if len(dirs) == 1 else parent


def _name(run_dir: Path, base: Path) -> str:
    """A short, unique run name: the path below the folder all runs share ("3", "2026-11-28/04-46-38/3")."""
    name = run_dir.relative_to(base).as_posix()
    return name if name != "." else run_dir.name
