"""A sweep re-run into a folder whose jobs all completed ends at once; anything else runs as usual."""
import json

from hydra.core.override_parser.overrides_parser import OverridesParser

from psx.rerun import completed_sweep


def parsed(*lines):
    return OverridesParser.create().parse_overrides(list(lines))


def job(sweep, num, overrides, status="completed"):
    (sweep / str(num)).mkdir(parents=True)
    (sweep / str(num) / "summary.json").write_text(json.dumps({"status": status, "overrides": overrides}))


def test_every_job_completed_is_found(tmp_path):
    for num, (model, seed) in enumerate([("mlp", 0), ("mlp", 1), ("cnn_shared", 0), ("cnn_shared", 1)]):
        job(tmp_path, num, [f"model={model}", f"seed={seed}", "trainer.epochs=1"])
    line = parsed("model=mlp,cnn_shared", "seed=0,1", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}",
                  "hydra/launcher=basic")
    assert completed_sweep(line) == (tmp_path, 4)


def test_a_job_not_completed_or_missing_or_another_grid_runs(tmp_path):
    job(tmp_path, 0, ["model=mlp", "seed=0"])
    job(tmp_path, 1, ["model=mlp", "seed=1"], status="interrupted")
    assert completed_sweep(parsed("model=mlp", "seed=0,1", f"hydra.sweep.dir={tmp_path}")) is None
    assert completed_sweep(parsed("model=mlp", "seed=0,2", f"hydra.sweep.dir={tmp_path}")) is None
    assert completed_sweep(parsed("model=mlp", "seed=0", f"hydra.sweep.dir={tmp_path}")) == (tmp_path, 1)
    assert completed_sweep(parsed("model=mlp", "seed=0")) is None  # no folder named: a new sweep
    assert completed_sweep(parsed("model=mlp", "seed=0", "experiment=x", f"hydra.sweep.dir={tmp_path}")) is None
    (tmp_path / "0" / "summary.json").write_text("[damaged")
    assert completed_sweep(parsed("model=mlp", "seed=0", f"hydra.sweep.dir={tmp_path}")) is None
