"""A sweep re-run into its folder whose jobs have all completed ends at once: Hydra would set up
every job (compose its config, make its folder) only for psx to skip it."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

# Overrides that may add sweep dimensions from a config file: the command line alone cannot say which jobs there are.
CONFIG_SWEEPS = ("experiment", "hydra/sweeper", "hydra.sweeper")


def completed_sweep(overrides) -> tuple[Path, int] | None:
    """(sweep folder, number of jobs) when `overrides` (parsed by Hydra's parser) name a
    hydra.sweep.dir in which every job of the grid they spell out has completed; else None."""
    sweep_dir, axes = None, []
    for override in overrides:
        key = override.get_key_element()
        if key.lstrip("+~").startswith(CONFIG_SWEEPS):
            return None
        if key == "hydra.sweep.dir":
            sweep_dir = Path(override.get_value_element_as_str())
        elif not key.startswith(("hydra.", "hydra/")):
            values = override.sweep_string_iterator() if override.is_sweep_override() else [override.get_value_element_as_str()]
            axes.append([f"{key}={value}" for value in values])
    if sweep_dir is None or not sweep_dir.is_dir():
        return None
    wanted = {tuple(sorted(job)) for job in itertools.product(*axes)}
    done = completed_jobs(sweep_dir)
    return (sweep_dir, len(wanted)) if wanted and wanted <= done else None


def completed_jobs(sweep_dir: Path) -> set[tuple[str, ...]]:
    """The overrides of every job in sweep_dir whose summary.json says completed."""
    done = set()
    for summary_file in sweep_dir.glob("*/summary.json"):
        try:
            summary = json.loads(summary_file.read_text())
            if summary.get("status") == "completed":
                done.add(tuple(sorted(summary.get("overrides") or [])))
        except (OSError, ValueError, AttributeError, TypeError):
            continue  # a damaged job is not completed: the ordinary path deals with it
    return done


def nothing_left_to_run(overrides) -> bool:
    """True (and says so) when a sweep re-run into its folder finds every job completed."""
    found = completed_sweep(overrides)
    if found is not None:
        sweep_dir, jobs = found
        print(f"psx: all {jobs} jobs in {sweep_dir} have completed; nothing to run "
              f"(`psx report {sweep_dir}` compares them)", file=sys.stderr)
    return found is not None
