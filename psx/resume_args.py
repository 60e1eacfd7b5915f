"""`psx train trainer.resume=<run>`: continue a stopped or killed run in its own folder, with the
overrides it was started with (plus machine settings given now), exactly as a sweep re-run
continues one of its jobs. Runs in the CLI before Hydra starts, without torch."""
from __future__ import annotations

import json
from pathlib import Path

from psx.errors import PsxError

CHECKPOINT_NAME = "checkpoint.pt"  # as psx.checkpoint (which imports torch)

# Overrides that change how a run is trained, not what: they may differ when it continues.
MACHINE_SETTINGS = ("device", "trainer.progress", "trainer.resume_damaged", "trainer.stack_seeds", "hydra.", "hydra/")


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def is_machine_setting(override: str) -> bool:
    return override_key(override).startswith(MACHINE_SETTINGS)


def what_is_trained(overrides: list[str]) -> list[str]:
    """The overrides that decide what a run trains (compared when a folder's run continues)."""
    return [o for o in overrides if not is_machine_setting(o) and override_key(o) != "trainer.resume"]


def resume_overrides(overrides: list[str], multirun: bool) -> list[str] | None:
    """None without trainer.resume; else the overrides that continue that run in its folder."""
    given = [o for o in overrides if override_key(o) == "trainer.resume"]
    if not given:
        return None
    if multirun:
        raise PsxError("trainer.resume continues one run; to finish a sweep, re-run it with its hydra.sweep.dir")
    location = Path(given[-1].split("=", 1)[1]).expanduser()
    extra = what_is_trained([o for o in overrides if o not in given])
    if extra:
        raise PsxError(f"trainer.resume continues a run with its own config; drop the other overrides: {' '.join(extra)}")
    run_dir = location.parent if location.name == CHECKPOINT_NAME else location
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise PsxError(f"no checkpoint at {run_dir / CHECKPOINT_NAME}")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        raise PsxError(f"{run_dir} is not a psx run folder (no readable summary.json)") from None
    if summary.get("status") == "completed":
        raise PsxError(f"the run in {run_dir} already completed; nothing to resume")
    if summary.get("status") == "failed" and not summary.get("resumable"):  # resumable: the disk refused a write
        raise PsxError(f"the run in {run_dir} failed ({summary.get('error')}); start it again without trainer.resume")
    now = [o for o in overrides if o not in given]  # machine settings only (checked above)
    keys_now = {override_key(o) for o in now}
    own = [o for o in summary.get("overrides") or []
           if override_key(o) != "trainer.resume" and override_key(o) not in keys_now]
    return [*own, *now, f"hydra.run.dir='{run_dir.resolve()}'"]


def continued_run_arguments(args: list[str], overrides: list[str], multirun: bool) -> list[str]:
    """`psx train` arguments in which `trainer.resume=<run>` became that run's own overrides and folder."""
    continued = resume_overrides(overrides, multirun)
    if continued is None:
        return args
    return [a for a in args if a not in overrides] + continued
