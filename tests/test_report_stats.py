"""psx report's comparisons on synthetic sweeps written as psx writes them (summary.json,
metrics.csv, .hydra/config.yaml), through the report's own entry point, in-process.

Expected numbers are computed here by hand (statistics module, a t quantile from the table) or
with scipy's own tests (ttest_rel, ttest_ind), never with the report's code."""
import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from psx.report.command import main as report

T_975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # t(0.975, df), from a t table


def write_run(folder: Path, *, model: str, arm: str | None, seed: int, acc: float, loss: float | None = None,
              train_size=100, family="cnn", reference_arm="unshared", subset_seed=0, legacy=False,
              unique=53_002, equivalent=350_602) -> Path:
    """One completed run folder, laid out as `psx train` writes it."""
    (folder / ".hydra").mkdir(parents=True)
    loss = 1.0 - acc if loss is None else loss
    summary = {"status": "completed", "error": None, "model": model, "family": family, "dataset": "digits",
               "train_size": train_size, "seed": seed, "train_examples": train_size or 1257,
               "params/unique": unique, "params/unshared_equiv": equivalent, "wall_seconds": 2.5,
               "selection_metric": "val/acc", "best_epoch": 2, "epochs_completed": 2,
               "metrics": {"val/acc": acc + 0.01, "test/acc": acc, "val/loss": loss, "test/loss": loss}}
    if legacy:  # a summary from before arms: only `shared`
        summary["shared"] = arm != "unshared"
    else:
        summary.update(arm=arm, reference_arm=reference_arm, shared=arm != reference_arm,
                       **{"sharing/ratio": equivalent / unique, "params/trainable": unique})
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "metrics.csv").write_text(f"epoch,step,train/loss,val/loss,val/acc\n1,4,1.5,{loss + 0.1},{acc - 0.05}\n"
                                        f"2,8,1.0,{loss},{acc + 0.01}\n")
    config = {"model": {"name": model, "family": family, **({} if legacy else {"arm": arm}), "channels": [8, 16]},
              "dataset": {"name": "digits", "train_size": train_size, "subset_seed": subset_seed, "split_seed": 0},
              "seed": seed, "paths": {"data_dir": "${oc.env:PSX_TEST_DATA,/data/psx}"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def write_sweep(root: Path, runs: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - model=cnn_shared,cnn_unshared\nseed: 0\n")
    for job, spec in enumerate(runs):
        write_run(root / str(job), **spec)
    return root


def gaps(out: Path) -> list[dict]:
    with open(out / "gaps.csv", newline="") as f:
        return list(csv.DictReader(f))


# Four seeds per arm at two sizes; at 100 the shared arm is ahead on every seed, at 400 it is a wash.
SHARED = {100: [0.81, 0.84, 0.80, 0.86], 400: [0.900, 0.915, 0.905, 0.910]}
UNSHARED = {100: [0.76, 0.80, 0.77, 0.79], 400: [0.905, 0.900, 0.912, 0.908]}


def paired_grid(**extra) -> list[dict]:
    runs = []
    for size in (100, 400):
        for seed in range(4):
            runs.append(dict(model="cnn_shared", arm="shared", seed=seed, acc=SHARED[size][seed], train_size=size, **extra))
            runs.append(dict(model="cnn_unshared", arm="unshared", seed=seed, acc=UNSHARED[size][seed], train_size=size,
                             unique=350_602, **extra))
    return runs


def test_paired_interval_matches_a_hand_computation(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", paired_grid())
    assert report([str(sweep)]) == 0
    rows = {r["train_size"]: r for r in gaps(sweep / "report")}
    p_values = {}
    for size in (100, 400):
        diffs = [s - u for s, u in zip(SHARED[size], UNSHARED[size])]
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        half = T_975[3] * sd / math.sqrt(4)
        row = rows[str(size)]
        assert row["method"] == "paired" and row["n_pairs"] == "4" and row["model"] == "cnn_shared"
        assert float(row["gap"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["ci_low"]) == pytest.approx(mean - half, abs=1e-9)
        assert float(row["ci_high"]) == pytest.approx(mean + half, abs=1e-9)
        assert min(diffs) <= float(row["boot_low"]) <= mean <= float(row["boot_high"]) <= max(diffs)
        p_values[size] = stats.ttest_rel(SHARED[size], UNSHARED[size]).pvalue
        assert float(row["p"]) == pytest.approx(p_values[size], rel=1e-9)
    # Holm over the two comparisons: the smaller p is doubled, the larger kept (and never below the first).
    small, large = sorted(p_values.values())
    assert float(rows["100"]["p_holm"]) == pytest.approx(min(1, 2 * small), rel=1e-9)
    assert float(rows["400"]["p_holm"]) == pytest.approx(max(min(1, 2 * small), large), rel=1e-9)
    assert rows["100"]["verdict"] == "cnn_shared better" and 2 * small < 0.05
    assert rows["400"]["verdict"] == "no detectable difference" and rows["400"]["seeds_needed"]
    shown = capsys.readouterr().out
    diffs = [s - u for s, u in zip(SHARED[100], UNSHARED[100])]
    mean, half = statistics.mean(diffs), T_975[3] * statistics.stdev(diffs) / 2
    assert f"[{mean - half:+.3f}, {mean + half:+.3f}]" in shown  # the terminal shows the same interval
    assert "cnn_shared − cnn_unshared" in shown and "4 pairs" in (sweep / "report" / "aggregate.md").read_text()
    assert "95% confidence interval" in shown and "Holm" in shown  # how to read it, in one sentence


def test_runs_on_different_seeds_or_subsets_are_not_paired(tmp_path, capsys):
    runs = []
    for i in range(3):
        runs.append(dict(model="cnn_shared", arm="shared", seed=i, acc=SHARED[100][i]))
        runs.append(dict(model="cnn_unshared", arm="unshared", seed=i + 10, acc=UNSHARED[100][i], unique=350_602))
    sweep = write_sweep(tmp_path / "seeds", runs)
    assert report([str(sweep)]) == 0
    (row,) = gaps(sweep / "report")
    assert row["method"] == "welch" and row["n_pairs"] == "0"
    welch = stats.ttest_ind(SHARED[100][:3], UNSHARED[100][:3], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert float(row["ci_low"]) == pytest.approx(low, rel=1e-9) and float(row["ci_high"]) == pytest.approx(high, rel=1e-9)
    assert float(row["p"]) == pytest.approx(welch.pvalue, rel=1e-9)
    assert "3 + 3 unpaired (Welch)" in (sweep / "report" / "aggregate.md").read_text()
    assert "not paired (no one-to-one match of seeds and training subsets), Welch's interval instead: digits 100" in capsys.readouterr().out

    runs = [dict(r, seed=r["seed"] % 10, subset_seed=0 if r["arm"] == "shared" else 1) for r in runs]
    sweep = write_sweep(tmp_path / "subsets", runs)  # same seeds, different training subsets
    assert report([str(sweep)]) == 0
    assert [r["method"] for r in gaps(sweep / "report")] == ["welch"]


def test_lower_is_better_metric_names_the_right_arm(tmp_path):
    runs = [dict(model="cnn_shared", arm="shared", seed=s, acc=0.8, loss=0.50 + 0.01 * s) for s in range(3)]
    runs += [dict(model="cnn_unshared", arm="unshared", seed=s, acc=0.8, loss=0.70 + 0.012 * s, unique=350_602)
             for s in range(3)]
    sweep = write_sweep(tmp_path / "sweep", runs)
    assert report([str(sweep), "--metric", "loss"]) == 0
    (row,) = gaps(sweep / "report")
    assert float(row["gap"]) == pytest.approx(-0.2 - 0.002, abs=1e-9)  # mean of the paired differences
    assert row["verdict"] == "cnn_shared better"  # lower loss wins


def test_old_summaries_pair_as_shared_against_unshared(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", paired_grid(legacy=True))
    assert report([str(sweep)]) == 0
    rows = gaps(sweep / "report")
    assert {(r["arm"], r["reference_arm"], r["method"]) for r in rows} == {("shared", "unshared", "paired")}
    with open(sweep / "report" / "summary.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert {r["sharing/ratio"] for r in runs} == {str(350_602 / 53_002), "1.0"}  # from the parameter counts


def test_three_arms_each_against_the_reference_and_a_sharing_plot(tmp_path, capsys):
    runs = paired_grid()
    runs += [dict(model="cnn_soft", arm="soft", seed=s, acc=0.78 + 0.01 * s, train_size=size, unique=175_301)
             for size in (100, 400) for s in range(4)]
    sweep = write_sweep(tmp_path / "sweep", runs)
    assert report([str(sweep), "--min-effect", "0.01"]) == 0
    rows = gaps(sweep / "report")
    assert sorted({(r["model"], r["reference_model"]) for r in rows}) == [
        ("cnn_shared", "cnn_unshared"), ("cnn_soft", "cnn_unshared")]
    assert len(rows) == 4 and all(r["method"] == "paired" for r in rows)
    undecided = [r for r in rows if r["verdict"] == "no detectable difference"]
    assert undecided and all(int(r["seeds_needed"]) >= 2 for r in undecided)
    assert (sweep / "report" / "test_acc_vs_sharing.png").stat().st_size > 1000
    assert "test_acc_vs_sharing.png" in capsys.readouterr().out


def test_terminal_fits_80_columns_and_lists_every_file(tmp_path, monkeypatch, capsys):
    sweep = write_sweep(tmp_path / "sweep", paired_grid())
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("PSX_TEST_DATA", "/resolved/data")
    assert report([str(sweep)]) == 0
    shown = capsys.readouterr().out
    table_lines = [line for line in shown.splitlines() if line[:1] in "┌│├└"]
    assert table_lines and max(len(line) for line in table_lines) <= 80
    assert "cnn_unshared" in shown and "350,602" in shown  # no cell broken across lines
    wrote = next(line for line in shown.splitlines() if line.startswith("wrote"))
    assert all(name in wrote for name in ("gaps.csv", "aggregate.md", "report.html", "summary.csv"))
    html = (sweep / "report" / "report.html").read_text()
    assert "${oc.env" not in html and "paths.data_dir: /resolved/data" in html


def test_seeds_estimate_matches_textbook_sample_sizes():
    """Cohen's tables (two-sided alpha 0.05, power 0.8, d = 0.5): 34 pairs for a paired t-test,
    64 runs per arm for two independent groups; a tenth of that effect needs hundreds."""
    from psx.report.stats import MAX_SEEDS, seeds_needed

    assert seeds_needed(0.01, 0.02, "paired") == 34
    assert seeds_needed(0.01, 0.02, "welch") == 64
    assert seeds_needed(-0.01, 0.02, "paired") == 34  # the sign of the gap does not matter
    assert seeds_needed(0.0001, 0.02, "paired") == MAX_SEEDS + 1
    assert seeds_needed(0.0, 0.02, "paired") is None and seeds_needed(0.01, 0.0, "paired") is None
    strict = seeds_needed(0.045, 0.0133, "paired", alpha=0.05 / 6)  # a stricter level needs more seeds
    assert strict > seeds_needed(0.045, 0.0133, "paired") >= 2


def test_a_run_without_its_reference_arm_takes_its_familys(tmp_path):
    """A run that recorded its arm but not the family's reference arm (as W&B summaries may) pairs
    with the runs that did."""
    sweep = write_sweep(tmp_path / "sweep", paired_grid())
    for job in range(0, 16, 2):  # the shared arm's runs
        path = sweep / str(job) / "summary.json"
        summary = json.loads(path.read_text())
        del summary["reference_arm"], summary["shared"]
        path.write_text(json.dumps(summary))
    assert report([str(sweep)]) == 0
    assert [(r["model"], r["method"]) for r in gaps(sweep / "report")] == [("cnn_shared", "paired")] * 2


def test_two_runs_of_one_arm_on_one_seed_are_not_paired(tmp_path):
    """Runs that --by leaves in one row although they differ (here: two per seed) have no one-to-one
    pairing; the comparison falls back to Welch instead of pairing arbitrarily."""
    runs = [dict(model="cnn_shared", arm="shared", seed=s % 2, acc=0.80 + 0.01 * s) for s in range(4)]
    runs += [dict(model="cnn_unshared", arm="unshared", seed=s, acc=0.78 + 0.01 * s, unique=350_602) for s in range(2)]
    sweep = write_sweep(tmp_path / "sweep", runs)
    assert report([str(sweep)]) == 0
    (row,) = gaps(sweep / "report")
    assert (row["method"], row["n_arm"], row["n_reference"]) == ("welch", "4", "2")


def test_a_config_key_that_copies_the_seed_is_not_called_a_mix(tmp_path, capsys):
    # federated.partition_seed is ${seed} in every run, federated or not: it varies with the seed
    # like the seed does, so it must not be named as a setting the rows mix; trainer.lr is one.
    sweep = write_sweep(tmp_path / "sweep", paired_grid())
    for path in sweep.glob("*/.hydra/config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["federated"] = {"partition_seed": config["seed"]}
        config["trainer"] = {"lr": 0.001 if config["seed"] < 2 else 0.01}
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert report([str(sweep)]) == 0
    assert "note: runs in one row differ in trainer.lr; add them to --by" in capsys.readouterr().out


def test_gaps_are_in_size_order_with_the_full_set_last(tmp_path):
    # Runs of two sweeps in one parent folder: the larger sizes are read first, and the full set's
    # train_size (None) is NaN in pandas' float column, which must not stop the sort.
    runs = []
    for size in (1000, None, 100, 300):
        for seed in range(2):
            runs.append(dict(model="cnn_shared", arm="shared", seed=seed, acc=0.9 + seed / 100, train_size=size))
            runs.append(dict(model="cnn_unshared", arm="unshared", seed=seed, acc=0.8 + seed / 50, train_size=size))
    sweep = write_sweep(tmp_path / "sweep", runs)
    assert report([str(sweep)]) == 0
    assert [r["train_size"] for r in gaps(sweep / "report")] == ["100", "300", "1000", ""]


def test_a_stacked_runs_wall_time_is_shared_by_its_seeds(tmp_path):
    # Stacked seeds record the wall time of their whole group (summary.json "stacked"): the table's
    # mean wall time per run divides it by the seeds in the group; runs trained alone keep theirs.
    sweep = write_sweep(tmp_path / "sweep", paired_grid())
    for path in sweep.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        if summary["arm"] == "shared":
            summary.update(wall_seconds=10.0, stacked={"seeds": [0, 1, 2, 3], "position": summary["seed"]})
            path.write_text(json.dumps(summary))
    assert report([str(sweep)]) == 0
    with open(sweep / "report" / "aggregate.csv", newline="") as f:
        walls = {(r["model"], r["train_size"]): float(r["wall_seconds mean"]) for r in csv.DictReader(f)}
    assert walls[("cnn_shared", "100")] == pytest.approx(2.5) and walls[("cnn_unshared", "100")] == pytest.approx(2.5)
    with open(sweep / "report" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["arm"], r["stacked_seeds"], r["wall_seconds"]) for r in rows} == {("shared", "4", "10.0"), ("unshared", "1", "2.5")}
