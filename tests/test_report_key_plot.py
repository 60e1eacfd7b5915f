"""psx report --x KEY: the metric against one key (a soft strength, a compression, parameters added
per task), on synthetic run folders written as psx writes them, through the report's own loader."""
import json

import matplotlib.pyplot as plt
import pytest
import yaml
from test_report_stats import write_run

from psx.errors import PsxError
from psx.report.command import main as report
from psx.report.key_plot import draw_panel, key_means
from psx.report.plots import arm_style
from psx.report.runs import load_local

SOFT = {0: [0.70, 0.72, 0.71], 1: [0.80, 0.82, 0.78], 100: [0.75, 0.74, 0.76]}
UNSHARED = [0.65, 0.66, 0.67]


def with_config(folder, summary=None, **model):
    path = folder / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["model"].update(model)
    path.write_text(yaml.safe_dump(config))
    if summary:
        data = json.loads((folder / "summary.json").read_text())
        data.update(summary)
        (folder / "summary.json").write_text(json.dumps(data))


def soft_sweep(root):
    job = 0
    for strength, accs in SOFT.items():
        for seed, acc in enumerate(accs):
            folder = write_run(root / str(job), model="cnn_soft", arm="soft", seed=seed, acc=acc)
            with_config(folder, soft={"strength": strength})
            job += 1
    for seed, acc in enumerate(UNSHARED):  # the relative runs at the default strength only
        with_config(write_run(root / str(job), model="cnn_unshared", arm="unshared", seed=seed, acc=acc), soft={"strength": 1})
        job += 1
    return root


def test_a_grid_key_is_spaced_in_order_and_a_one_value_arm_is_a_horizontal_line(tmp_path):
    runs = load_local([soft_sweep(tmp_path / "sweep")]).runs
    x = "model.soft.strength"
    stats = key_means(runs, ["dataset", "model", "train_size", x], "test/acc")
    fig, ax = plt.subplots()
    draw_panel(ax, stats, ["model"], "train_size", x, True, arm_style)
    soft = next(c for c in ax.containers if c.get_label().startswith("cnn_soft"))
    x_data, y_data = soft.lines[0].get_data()
    assert list(x_data) == [0, 1, 2]  # evenly spaced: 0 fits, 100 does not crowd the axis
    assert list(y_data) == pytest.approx([sum(a) / 3 for a in SOFT.values()])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "100"]
    [line] = [line for line in ax.get_lines() if line.get_label().startswith("cnn_unshared")]
    assert line.get_label().endswith(f"(at {x}=1 only)") and list(line.get_ydata()) == pytest.approx([0.66, 0.66])
    plt.close(fig)


def test_report_writes_the_figure_and_rejects_an_unknown_key(tmp_path):
    sweep = soft_sweep(tmp_path / "sweep")
    assert report([str(sweep), "--by", "dataset,model,train_size,model.soft.strength", "--x", "model.soft.strength"]) == 0
    assert (sweep / "report" / "test_acc_vs_model.soft.strength.png").stat().st_size > 10_000
    with pytest.raises(PsxError, match="unknown --x key 'model.nope'"):
        report([str(sweep), "--x", "model.nope"])


def test_parameters_added_per_task_go_on_a_log_axis(tmp_path):
    added = {"none": 103_018, "head": 1_290, "lora": 4_938}
    job = 0
    for adapter, count in added.items():
        for seed in range(2):
            folder = write_run(tmp_path / "sweep" / str(job), model="cnn_shared", arm="shared", seed=seed, acc=0.5 + seed / 10)
            with_config(folder, summary={"params/added_per_task": count}, adapter=adapter)
            job += 1
    runs = load_local([tmp_path / "sweep"]).runs
    stats = key_means(runs, ["dataset", "model.adapter", "train_size", "params/added_per_task"], "test/acc")
    fig, ax = plt.subplots()
    draw_panel(ax, stats, ["model.adapter"], "train_size", "params/added_per_task", False, arm_style)
    assert ax.get_xscale() == "log"
    points = {c.get_label().split(",")[0]: c.lines[0].get_data() for c in ax.containers}
    assert {k: (list(x), list(y)) for k, (x, y) in points.items()} == {
        a: ([n], [pytest.approx(0.55)]) for a, n in added.items()}
    plt.close(fig)
