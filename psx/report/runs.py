"""Find run folders and load them: psx run folders here, W&B run folders through from_wandb.py.

A psx run folder holds summary.json, .hydra/config.yaml and metrics.csv. Nothing in a folder may
stop the report: a file that cannot be read becomes the run's reason ("summary.json is a JSON
list, not an object"), and the run is listed with it instead of being counted or dropped silently.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from psx.errors import PsxError
from psx.loggers import flatten
from psx.report import files
from psx.report.records import RunSet, build_runset, make_record

SKIPPED_FOLDERS = (".hydra", "report", "__pycache__")


def default_path(cwd: Path) -> Path:
    """The most recent sweep under ./outputs/multirun that has runs, else the most recent single
    run under ./outputs. Folder names are <date>/<time-with-microseconds>, so the newest sorts last.
    A sweep that failed inside Hydra leaves a folder with only multirun.yaml: it is skipped."""
    outputs = cwd / "outputs"
    for sweep in sorted((p for p in outputs.glob("multirun/*/*") if p.is_dir()), reverse=True):
        if any(_is_run_dir(job) for job in sweep.iterdir() if job.is_dir()):
            return sweep
    singles = sorted(p for p in outputs.glob("*/*") if p.parent.name != "multirun" and _is_run_dir(p))
    if singles:
        return singles[-1]
    raise PsxError(f"no runs found under {outputs} (run `psx train -m ...` first, or give a folder: psx report PATH)")


def _is_run_dir(path: Path) -> bool:
    return (path / "summary.json").exists() or (path / ".hydra").is_dir()


def is_wandb_run_dir(path: Path, names: list[str]) -> bool:
    """A W&B run folder: wandb/offline-run-*/ or wandb/run-*/, with its transaction log or files/."""
    return path.name.startswith(("offline-run-", "run-")) and (
        any(f.endswith(".wandb") for f in names) or (path / "files" / "wandb-summary.json").exists()
    )


def discover(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(psx run folders, W&B run folders) below the paths. A folder with summary.json or .hydra/ is
    a psx run (one without summary.json is listed as such) and is not searched further."""
    psx_runs: dict[Path, None] = {}
    wandb_runs: dict[Path, None] = {}
    for root in paths:
        if not root.exists():
            raise PsxError(f"no such folder: {root}")
        if root.is_file():
            root = root.parent
        for dirpath, dirnames, names in os.walk(root):  # does not follow symlinks (wandb/latest-run)
            here = Path(dirpath)
            if "summary.json" in names or "summary.json" in dirnames or ".hydra" in dirnames:
                psx_runs[here.resolve()] = None
                dirnames.clear()
            elif is_wandb_run_dir(here, names):
                wandb_runs[here.resolve()] = None
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_FOLDERS)
    return list(psx_runs), list(wandb_runs)


def load_psx_run(run_dir: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """A run folder as (record, per-epoch curves or None). Damaged files become reasons."""
    summary, summary_problem = files.read_summary(run_dir / "summary.json")
    config, config_problem = files.read_config(run_dir / ".hydra" / "config.yaml")
    curves, curves_problem = files.read_curves(run_dir / "metrics.csv")
    problems = [p for p in (config_problem, curves_problem) if p]
    if summary_problem:
        summary = {"status": "damaged", "error": summary_problem}
    record = make_record(summary, flatten(config), run=name, source="psx", path=str(run_dir), problems=problems)
    if curves is not None:
        curves.insert(0, "run", name)
    return record, curves


def read_sweep(sweep_dir: Path) -> dict[str, Any] | None:
    """The command and config of a Hydra sweep, from its multirun.yaml (None if none or unreadable)."""
    try:
        multirun = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(multirun, dict):
        return None
    hydra = multirun.get("hydra") if isinstance(multirun.get("hydra"), dict) else {}
    overrides = (hydra.get("overrides") or {}).get("task") if isinstance(hydra.get("overrides"), dict) else None
    config = {k: v for k, v in multirun.items() if k != "hydra"}
    return {
        "dir": str(sweep_dir),
        "command": " ".join(["psx train -m", *(shlex.quote(str(o)) for o in overrides or [])]),
        "config": yaml.safe_dump(config, sort_keys=False),
    }


def load_local(paths: list[Path]) -> RunSet:
    """Every run below the paths: psx run folders and W&B run folders."""
    psx_dirs, wandb_dirs = discover(paths)
    if not psx_dirs and not wandb_dirs:
        raise PsxError(f"no runs found under {', '.join(str(p) for p in paths)} (no summary.json or W&B run folder)")
    base = _common_parent(psx_dirs + wandb_dirs)
    records, curves = [], []
    for run_dir in psx_dirs:
        record, curve = load_psx_run(run_dir, _name(run_dir, base))
        records.append(record)
        if curve is not None:
            curves.append(curve)
    sweeps = [s for s in (read_sweep(d) for d in sorted({d.parent for d in psx_dirs})) if s]
    if wandb_dirs:
        from psx.report.from_wandb import load_wandb_dir  # W&B's protobufs only when there are W&B runs

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
