"""A sweep's worker processes die with the sweep's main process.

joblib's loky workers outlive a `psx train -m` that is killed (SIGKILL, or SIGTERM, which the
waiting main process does not catch): they finish the job they had, then wait forever to hand
over a result nobody reads. A re-run of the sweep would then meet them writing into its folders.
So a worker watches its parent: once the parent is gone, a running job is asked to stop as on
SIGTERM (a checkpoint after the current step, status "interrupted"), and the worker exits as soon
as the job has ended, or at once if it had none. The folder lock (psx.runlock) goes with it.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 120  # a job asked to stop gets this long to reach its checkpoint

_state = {"watching": False, "job_running": False}
_lock = threading.Lock()


def watch_parent(parent_pid: int | None = None) -> None:
    """In a worker process: start (once) the watch on its parent, `parent_pid` if given and it
    is the parent (a process on another machine, e.g. a SLURM job, is not watched)."""
    parent = os.getppid()
    if parent_pid is not None and parent != parent_pid:
        return
    with _lock:
        if _state["watching"]:
            return
        _state["watching"] = True
    threading.Thread(target=_watch, args=(parent,), name="psx-parent-watch", daemon=True).start()


@contextmanager
def job_running() -> Iterator[None]:
    """Marks a job in progress, so that an orphaned worker stops it gracefully."""
    _state["job_running"] = True
    try:
        yield
    finally:
        _state["job_running"] = False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    if _state["job_running"]:
        os.kill(os.getpid(), signal.SIGTERM)  # the job's own handler: checkpoint, then StopRequested
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while _state["job_running"] and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    os._exit(1)
