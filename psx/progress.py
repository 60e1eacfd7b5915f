"""Progress display: a rich bar on a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("psx")


class Progress:
    def __init__(self, mode: str, epochs: int, steps_per_epoch: int, done_steps: int = 0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.epochs = epochs
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
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_end(self, epoch: int, line: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, epoch=min(epoch + 1, self.epochs), status=line)
        elif self.mode == "lines":
            log.info("epoch %d  %s", epoch, line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
