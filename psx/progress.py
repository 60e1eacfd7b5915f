"""Progress display: a rich bar on a terminal; plain lines otherwise (one per epoch, and one every
LINES_EVERY_S seconds inside a long epoch, so a log file shows a long run is alive)."""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("psx")

LINES_EVERY_S = 30.0


class Progress:
    def __init__(self, mode: str, epochs: int, steps_per_epoch: int, done_steps: int = 0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._done = done_steps
        self._next_line = time.monotonic() + LINES_EVERY_S
        self._bar = None
        if mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}/" + str(epochs)),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,  # redraws happen on rich's thread, never per training step
            )
            self._task = self._bar.add_task(
                "train", total=epochs * steps_per_epoch, completed=done_steps, epoch=1 + done_steps // steps_per_epoch, status=""
            )
            self._bar.start()

    def step(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        elif self.mode == "lines" and time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + LINES_EVERY_S
            epoch, step = divmod(self._done - 1, self.steps_per_epoch)
            log.info("epoch %d/%d: step %d/%d", epoch + 1, self.epochs, step + 1, self.steps_per_epoch)

    def phase(self, what: str) -> None:
        """Name the work between training steps (validating, testing), which can take a while."""
        if self._bar is not None:
            self._bar.update(self._task, status=what)
        elif self.mode == "lines":
            self._next_line = time.monotonic() + LINES_EVERY_S

    def epoch_end(self, epoch: int, line: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, epoch=min(epoch + 1, self.epochs), status=line)
        elif self.mode == "lines":
            log.info("epoch %d  %s", epoch, line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class JobNumberPrefix(logging.Filter):
    """Jobs that run side by side (a joblib sweep) write to one terminal: each line psx logs starts
    with its job's number, as Hydra's own launch lines do (`#3 : model=...`)."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if self.prefix and not getattr(record, "psx_numbered", False):
            record.msg, record.psx_numbered = f"{self.prefix}{record.msg}", True
        return True


_JOB_NUMBER = JobNumberPrefix()


def number_log_lines(job_num: int | None) -> None:
    """Prefix psx's log lines with `#<job_num> ` from now on in this process (None: no prefix); a
    joblib worker runs one job after another, so each job sets its own number."""
    _JOB_NUMBER.prefix = f"#{job_num} " if job_num is not None else ""
    if _JOB_NUMBER not in log.filters:
        log.addFilter(_JOB_NUMBER)
