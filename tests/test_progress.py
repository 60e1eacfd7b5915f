"""Progress without a terminal: a line now and then inside a long epoch, and the phases named."""
import logging

from psx import progress


def test_lines_mode_reports_inside_an_epoch(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LINES_EVERY_S", 0.0)
    shown = progress.Progress("lines", epochs=2, steps_per_epoch=4)
    with caplog.at_level(logging.INFO, logger="psx"):
        for _ in range(6):
            shown.step()
        shown.phase("validating...")
        shown.epoch_end(1, "loss 1.0")
        shown.close()
    lines = [r.getMessage() for r in caplog.records]
    assert "epoch 1/2: step 4/4" in lines and "epoch 2/2: step 2/4" in lines
    assert lines[-1] == "epoch 1  loss 1.0"


def test_lines_mode_stays_quiet_within_the_interval(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LINES_EVERY_S", 3600.0)
    shown = progress.Progress("lines", epochs=1, steps_per_epoch=100)
    with caplog.at_level(logging.INFO, logger="psx"):
        for _ in range(100):
            shown.step()
    assert caplog.records == []
