"""Start the joblib launcher's worker processes while `psx train -m` is still checking the sweep.

Hydra's joblib launcher runs the jobs in loky worker processes, and each worker's first job would
first import torch and psx, and torch._dynamo (every torch optimizer imports it when created):
seconds per worker, spent after the sweep has been checked and composed. joblib keeps its loky
workers for the next Parallel call made with the same arguments, so psx makes one such call
early, in a background thread, with tasks that only do those imports; the launcher's own call
then reuses the warm workers. Any failure here only loses the head start: the launcher starts
its workers as usual. One worker also makes psx's checks that need torch (psx.checks), so the
main process, which only composes configs and waits for jobs, never imports torch: on 2 cores
that import competed with the workers' own and cost the sweep about 3 s.
"""
from __future__ import annotations

import os
import threading
from typing import Any


def import_job_modules() -> int:
    """Runs in a worker: what a job and psx's checks import first (torch, and the psx modules
    that psx.train brings in). Returns the worker's pid."""
    import psx.train  # noqa: F401
    from psx.orphans import watch_parent

    watch_parent()  # a warm worker must not outlive the sweep either
    return os.getpid()


def finish_warm_up() -> int:
    """Runs in a worker, after psx's checks could run there: torch._dynamo, which a job's first
    optimizer would import, and the freeze of the import-time objects. Returns the worker's pid."""
    import psx.train

    psx.train.freeze_long_lived_objects()
    return os.getpid()


def parallel_arguments(launcher: dict[str, Any]) -> dict[str, Any]:
    """joblib.Parallel's arguments exactly as Hydra's joblib launcher (1.2) builds them from its
    config: the config's keys, the loky backend, and the size-like keys as integers when they
    are numbers (joblib reuses its workers only for a call with identical arguments; a test
    checks that the launcher's call does reuse them)."""
    arguments = {key: value for key, value in launcher.items() if key != "_target_"}
    arguments["backend"] = "loky"  # hard-coded by the launcher too
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):
        value = arguments.get(key)
        if value:
            try:
                arguments[key] = int(value)
            except ValueError:  # e.g. "2*n_jobs", "1M": joblib reads those itself
                pass
    return arguments


def sweep_size(params: dict[str, Any], overrides: list[str]) -> int:
    """Jobs in a basic-sweeper sweep: the product of the value counts of hydra.sweeper.params,
    with command-line overrides (which come after the params) replacing a key's values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = {str(key): f"{key}={value}" for key, value in params.items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(overrides):
        lines[override.get_key_element()] = override.input_line
    size = 1
    for override in parser.parse_overrides(list(lines.values())):
        size *= len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    return size


class WorkerStart:
    """The early Parallel calls, in a daemon thread; the launcher's own call may come while they
    run (joblib shares the pool between concurrent calls with the same arguments). Imports in at
    most as many workers as the sweep has jobs (torch in a worker without a job would waste
    memory and time)."""

    def __init__(self, launcher: dict[str, Any], jobs: int):
        self.pids: list[int] = []
        self.error: BaseException | None = None
        from joblib import effective_n_jobs

        arguments = self._arguments = parallel_arguments(launcher)
        workers = min(effective_n_jobs(arguments.get("n_jobs") or 1), jobs)
        if workers < 2:  # joblib runs a single job in this process: nothing to start
            self._thread = None
            return
        # The same arguments as the launcher's call (n_jobs included: joblib reuses its workers
        # only for identical ones), with one import task per worker that will get a job.
        self._thread = threading.Thread(target=self._run, args=(arguments, workers), daemon=True)
        self._thread.start()

    def _run(self, arguments: dict[str, Any], workers: int) -> None:
        from joblib import Parallel, delayed

        try:
            # In two rounds, so that the checks (queued meanwhile by check()) need not wait for
            # torch._dynamo, which they do not use.
            self.pids = Parallel(**arguments)(delayed(import_job_modules)() for _ in range(workers))
            Parallel(**arguments)(delayed(finish_warm_up)() for _ in range(workers))
        except BaseException as e:  # noqa: BLE001 - only the head start is lost; the launcher reports real errors
            self.error = e

    def check(self, configs) -> str | None:
        """psx.checks.runnable_or_reason(configs), run in a worker once it has imported torch (a
        second Parallel call with the same arguments shares the pool), so that the calling
        process need not import torch at all; run here if no worker can."""
        from psx.checks import runnable_or_reason

        if self._thread is not None:
            from joblib import Parallel, delayed

            try:
                (reason,) = Parallel(**self._arguments)([delayed(runnable_or_reason)(configs)])
                return reason
            except Exception:  # noqa: BLE001 - e.g. workers that cannot start: check here instead
                pass
        return runnable_or_reason(configs)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def cancel(self) -> None:
        """The sweep will not run (it failed its checks): kill the workers rather than wait for
        their imports."""
        stop_workers(wait=False)

    def stop(self) -> None:
        """The sweep has finished: its workers can go."""
        if self._thread is not None:
            self._thread.join()
            stop_workers(wait=True)


def stop_workers(wait: bool = True) -> None:
    """Kill the loky workers joblib keeps for reuse. After a sweep they are idle (each job has
    finished and flushed its files and trackers); left alone, they would each shut their
    interpreter down, torch included, at exit: about a second more for every `psx train -m` on
    the joblib launcher. loky's get_reusable_executor(reuse=True) returns the pool joblib used
    as it is (no resizing, no new workers)."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor(reuse=True).shutdown(wait=wait, kill_workers=True)


def start_for_sweep(hydra: dict[str, Any], overrides: list[str]) -> WorkerStart | None:
    """A WorkerStart if the sweep runs on the joblib launcher with Hydra's basic sweeper (whose
    job count is known in advance); None otherwise, or if the config is not understood (then
    the launcher starts its workers itself)."""
    launcher, sweeper = hydra.get("launcher") or {}, hydra.get("sweeper") or {}
    if "hydra_joblib_launcher" not in str(launcher.get("_target_", "")):
        return None
    if launcher.get("n_jobs") == 0:  # joblib's own error would come only once the sweep folder exists
        from psx.errors import PsxError

        raise PsxError("hydra.launcher.n_jobs must be a number of jobs (>= 1), or negative for all cores "
                       "but n_jobs + 1 (-1: all), got 0")
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    try:
        return WorkerStart(launcher, sweep_size(sweeper.get("params") or {}, overrides))
    except Exception:  # e.g. n_jobs given as an interpolation: no head start, nothing else changes
        return None
