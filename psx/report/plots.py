"""The report's figures (matplotlib, Agg backend: no display needed). Imported only when plotting.

Every figure: one panel per dataset (or per dataset and size), a title that says what is compared,
axis labels with units, and legends that say which arm is shared and which is not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from psx.report.aggregate import MODEL_KEYS, aggregate, as_objects, lower_is_better, sort_key  # noqa: E402
from psx.report.compare import compare  # noqa: E402
from psx.report.tables import is_missing, size_label  # noqa: E402

SIZE_KEYS = ("train_size", "dataset.train_size")
DATASET_KEYS = ("dataset", "dataset.name")
DPI = 100


def metric_label(metric: str, split: str) -> str:
    """'acc', 'test' -> 'test accuracy (fraction correct)'; units so the axis reads on its own."""
    base, _, task = metric.partition("/")
    names = {
        "acc": "accuracy (fraction correct)",
        "loss": "cross-entropy loss (nats)",
        "ppl": "perplexity (lower is better)",
    }
    name = names.get(base, base)
    return f"{split} {name}" + (f", task {task}" if task else "")


def arm_label(row: dict[str, Any], line_keys: list[str]) -> str:
    parts = [str(row[k]) for k in line_keys if not is_missing(row.get(k))]
    if not is_missing(row.get("arm")) and row["arm"] not in parts:
        parts.append(f"({row['arm']})")
    return " ".join(parts) or "all runs"


def arm_style(shared: Any) -> dict[str, Any]:
    if shared is True:
        return {"linestyle": "-", "marker": "o"}
    if shared is False:
        return {"linestyle": "--", "marker": "s"}
    return {"linestyle": ":", "marker": "^"}


def _panels(n: int, width: float = 6.4, height: float = 4.2, ncols: int | None = None):
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _size_ticks(ax, frame: pd.DataFrame, size_key: str) -> None:
    """Ticks at the sizes trained on; the full set is labelled 'all' with its actual size."""
    ticks = frame.dropna(subset=["train_examples"]).drop_duplicates(size_key)
    ticks = ticks.sort_values("train_examples")
    ax.set_xscale("log")
    ax.set_xticks(ticks["train_examples"].tolist())
    ax.set_xticklabels([size_label(r[size_key], r["train_examples"]) for r in ticks.to_dict("records")])
    ax.minorticks_off()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


class Plotter:
    """Figures for one report: the runs grouped by dataset, arm (model and other --by keys) and size."""

    def __init__(self, runs: pd.DataFrame, curves: pd.DataFrame, by: list[str], metric: str, out: Path,
                 x: str | None = None):
        self.runs, self.curves, self.metric, self.out, self.x = runs, curves, metric, out, x
        self.size_key = next((k for k in by if k in SIZE_KEYS), "train_size")
        self.dataset_key = next((k for k in by if k in DATASET_KEYS), "dataset")
        self.line_keys = [k for k in by if k not in (*SIZE_KEYS, *DATASET_KEYS)] or ["model"]
        self.by = [self.dataset_key, *self.line_keys, self.size_key]
        self.agg = aggregate(runs, self.by, metric)
        self.agg = self.agg[self.agg["n"] > 0].copy()
        for key in self.by:
            self.agg[key] = as_objects(self.agg[key])
        self.split = "test" if f"test/{metric} mean" in self.agg else "val"
        self.sense = "lower is better" if lower_is_better(metric) else "higher is better"

    def all(self) -> list[tuple[Path, str]]:
        """(png, caption) for each figure that the data supports."""
        figures = [
            (self.metric_vs_size(), f"{self.split} {self.metric} vs training-set size, mean ± std over seeds"),
            (self.gap_vs_size(), f"arm − reference gap in {self.split} {self.metric} vs training-set size, 95% confidence intervals"),
            (self.learning_curves(), f"learning curves: val {self.metric} per epoch, mean ± std over seeds"),
            (self.metric_vs_params(), f"{self.split} {self.metric} vs unique parameters"),
            (self.metric_vs_sharing(), f"{self.split} {self.metric} vs sharing ratio (families with more than two arms)"),
            (self.metric_vs_key(), f"{self.split} {self.metric} vs {self.x}, mean ± std over seeds; horizontal lines: "
                                   f"arms run at one value of {self.x} only"),
            (self.federated(), "federated runs: test accuracy per round and per MB communicated, a line per arm, "
                               "mean ± std over seeds; dashed: the centralised run"),
        ]
        return [(path, caption) for path, caption in figures if path is not None]

    def metric_vs_key(self) -> Path | None:
        """With --x KEY: the metric against that key (psx.report.key_plot)."""
        if self.x is None:
            return None
        from psx.report.key_plot import plot_metric_vs_key

        return plot_metric_vs_key(self.runs, self.by, self.metric, self.split, self.x, self.out,
                                  self.dataset_key, self.size_key, arm_style)

    def federated(self) -> Path | None:
        """Accuracy against rounds and bytes communicated, when the report holds federated runs."""
        arms = self.runs.get("federated.name")
        if "path" not in self.runs or arms is None or not (arms.dropna() != "none").any():
            return None
        from psx.federated.figures import load_runs, plot

        rounds, central = load_runs(self.runs["path"].dropna().tolist())
        return plot(rounds, central, self.out / "federated_acc_vs_rounds.png") if len(rounds) else None

    def _datasets(self, frame: pd.DataFrame) -> list[Any]:
        return sorted(frame[self.dataset_key].unique(), key=sort_key) if len(frame) else []

    def _arms(self, frame: pd.DataFrame):
        """(label, style, rows sorted by size) per line."""
        for _, rows in frame.groupby(self.line_keys, dropna=False, sort=False):
            rows = rows.dropna(subset=["train_examples"]).sort_values("train_examples")
            if rows.empty:
                continue
            first = rows.iloc[0].to_dict()
            yield arm_label(first, self.line_keys), arm_style(first.get("shared")), rows

    def metric_vs_size(self) -> Path | None:
        datasets = self._datasets(self.agg)
        if not datasets:
            return None
        fig, axes = _panels(len(datasets))
        column = f"{self.split}/{self.metric}"
        for ax, dataset in zip(axes, datasets):
            frame = self.agg[self.agg[self.dataset_key] == dataset]
            for i, (label, style, rows) in enumerate(self._arms(frame)):
                x, mean, std = rows["train_examples"], rows[f"{column} mean"], rows[f"{column} std"]
                ax.plot(x, mean, color=f"C{i}", label=label, **style)
                ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.18, linewidth=0)
            _size_ticks(ax, frame, self.size_key)
            seeds = sorted(frame["n"].unique())
            n = f"n = {seeds[0]}" if len(seeds) == 1 else f"n = {seeds[0]}–{seeds[-1]}"
            ax.set_title(f"{dataset}: {self.split} {self.metric} vs training-set size\n(mean ± std over seeds, {n} per point)")
            ax.set_xlabel("training examples (log scale)")
            ax.set_ylabel(metric_label(self.metric, self.split))
            ax.grid(alpha=0.3)
            ax.legend(title=f"model ({self.sense})")
        return _save(fig, self.out / f"{self.split}_{_safe(self.metric)}_vs_size.png")

    def gap_vs_size(self) -> Path | None:
        table = compare(self.runs, self.by, self.metric)
        if table.empty or self.dataset_key not in table or self.size_key not in table:
            return None
        table = table.dropna(subset=["train_examples"])
        datasets = self._datasets(table)
        if not datasets:
            return None
        fig, axes = _panels(len(datasets))
        pair_keys = [k for k in self.line_keys if k not in MODEL_KEYS and k in table]
        for ax, dataset in zip(axes, datasets):
            frame = table[table[self.dataset_key] == dataset]
            for i, (_, rows) in enumerate(frame.groupby([*pair_keys, "model", "reference_model"], sort=False)):
                rows = rows.sort_values("train_examples")
                first = rows.iloc[0]
                extra = " ".join(str(first[k]) for k in pair_keys)
                label = f"{first['model']} − {first['reference_model']} {extra}".strip()
                x, gap = rows["train_examples"] * 1.04 ** i, rows["gap"]  # nudged so the bars do not hide each other
                errors = np.nan_to_num(np.vstack([gap - rows["ci_low"], rows["ci_high"] - gap]).astype(float))
                ax.errorbar(x, gap, yerr=errors, color=f"C{i}", marker="o", capsize=4, label=label)
            ax.axhline(0, color="black", linewidth=0.8)
            _size_ticks(ax, frame, self.size_key)
            helps = "< 0" if lower_is_better(self.metric) else "> 0"
            ax.set_title(f"{dataset}: arm − reference arm\n({helps}: the arm is better; bars: 95% confidence interval)")
            ax.set_xlabel("training examples (log scale)")
            ax.set_ylabel(f"difference in {metric_label(self.metric, self.split)}")
            ax.grid(alpha=0.3)
            ax.legend()
        return _save(fig, self.out / f"gap_{_safe(self.metric)}_vs_size.png")

    def metric_vs_sharing(self) -> Path | None:
        """Where a family has more than two arms: the metric against how much each arm shares."""
        frame = self.agg.dropna(subset=["sharing/ratio", "family", "arm"])
        arms = frame.groupby("family")["arm"].nunique()
        frame = frame[frame["family"].isin(arms[arms > 2].index)]
        datasets = self._datasets(frame)
        if not datasets:
            return None
        fig, axes = _panels(len(datasets))
        column = f"{self.split}/{self.metric}"
        for ax, dataset in zip(axes, datasets):
            panel = frame[frame[self.dataset_key] == dataset]
            for i, (_, rows) in enumerate(panel.groupby(["family", self.size_key], dropna=False, sort=False)):
                rows = rows.sort_values("sharing/ratio")
                first = rows.iloc[0].to_dict()
                label = f"{first['family']}, train size {size_label(first[self.size_key], first['train_examples'])}"
                ax.errorbar(rows["sharing/ratio"], rows[f"{column} mean"], yerr=np.nan_to_num(rows[f"{column} std"].astype(float)),
                            color=f"C{i}", marker="o", capsize=3, label=label)
            ratios = panel.drop_duplicates("arm").sort_values("sharing/ratio")
            ax.set_xscale("log")
            ax.set_xticks(ratios["sharing/ratio"].tolist())
            ax.set_xticklabels([f"{r['arm']}\n{r['sharing/ratio']:.2g}" for r in ratios.to_dict("records")])
            ax.minorticks_off()
            ax.set_title(f"{dataset}: {self.split} {self.metric} vs sharing ratio\n(mean ± std over seeds; 1 = nothing shared)")
            ax.set_xlabel("arm and its sharing ratio: unshared-equivalent / unique parameters (log scale)")
            ax.set_ylabel(metric_label(self.metric, self.split))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        return _save(fig, self.out / f"{self.split}_{_safe(self.metric)}_vs_sharing.png")

    def learning_curves(self) -> Path | None:
        column = f"val/{self.metric}"
        if self.curves.empty or column not in self.curves or "epoch" not in self.curves:
            return None
        done = self.runs[self.runs["status"] == "completed"]
        keys = list(dict.fromkeys([self.dataset_key, *self.line_keys, self.size_key, "shared", "train_examples"]))
        frame = self.curves[["run", "epoch", column]].merge(done[["run", *keys]], on="run")
        frame = frame.dropna(subset=[column])
        if frame.empty:
            return None
        for key in dict.fromkeys([*self.by, "shared"]):
            frame[key] = as_objects(frame[key])
        panels = sorted({(r[self.dataset_key], r[self.size_key]) for r in frame.to_dict("records")},
                        key=lambda p: (sort_key(p[0]), sort_key(p[1])))
        fig, axes = _panels(len(panels), width=4.6, height=3.6, ncols=min(4, len(panels)))
        arms = sorted({arm_label(r, self.line_keys) for r in frame.to_dict("records")})
        for ax, (dataset, size) in zip(axes, panels):
            panel = frame[(frame[self.dataset_key] == dataset) & frame[self.size_key].map(lambda v: v == size)]
            lines = [(arm_label(rows.iloc[0].to_dict(), self.line_keys), rows)
                     for _, rows in panel.groupby(self.line_keys, dropna=False, sort=False)]
            for label, rows in sorted(lines, key=lambda line: line[0]):
                first = rows.iloc[0].to_dict()
                stats = rows.groupby("epoch")[column].agg(["mean", "std"]).reset_index()
                i = arms.index(label)
                ax.plot(stats["epoch"], stats["mean"], color=f"C{i}", label=label, **arm_style(first.get("shared")), markersize=3)
                ax.fill_between(stats["epoch"], stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                color=f"C{i}", alpha=0.18, linewidth=0)
            examples = panel["train_examples"].dropna()
            ax.set_title(f"{dataset}, train size {size_label(size, examples.iloc[0] if len(examples) else None)}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(metric_label(self.metric, "val"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.suptitle(f"learning curves: val {self.metric} per epoch (mean ± std over seeds)")
        return _save(fig, self.out / f"learning_curves_{_safe(self.metric)}.png")

    def metric_vs_params(self) -> Path | None:
        frame = self.agg.dropna(subset=["params/unique"])
        datasets = self._datasets(frame)
        if not datasets:
            return None
        fig, axes = _panels(len(datasets))
        column = f"{self.split}/{self.metric}"
        for ax, dataset in zip(axes, datasets):
            panel = frame[frame[self.dataset_key] == dataset]
            sizes = sorted({(r[self.size_key], r["train_examples"]) for r in panel.to_dict("records")},
                           key=lambda s: sort_key(s[1]))
            for i, (size, examples) in enumerate(sizes):
                rows = panel[panel[self.size_key].map(lambda v: v == size)].sort_values("params/unique")
                color = plt.cm.viridis(0.85 * i / max(1, len(sizes) - 1))
                ax.plot(rows["params/unique"], rows[f"{column} mean"], color=color, linewidth=0.8, alpha=0.6)
                for row in rows.to_dict("records"):
                    style = arm_style(row.get("shared"))
                    ax.errorbar(row["params/unique"], row[f"{column} mean"], yerr=np.nan_to_num(row[f"{column} std"]),
                                color=color, marker=style["marker"], markersize=7, capsize=3,
                                markerfacecolor=color if row.get("shared") is not False else "white")
            ax.set_xscale("log")
            ax.set_title(f"{dataset}: {self.split} {self.metric} vs unique parameters\n(one point per model and size, ± std over seeds)")
            ax.set_xlabel("unique parameters (count, log scale)")
            ax.set_ylabel(metric_label(self.metric, self.split))
            ax.grid(alpha=0.3)
            handles = [Line2D([], [], color=plt.cm.viridis(0.85 * i / max(1, len(sizes) - 1)), label=f"train size {size_label(s, e)}")
                       for i, (s, e) in enumerate(sizes)]
            handles += [Line2D([], [], color="gray", linestyle="", marker="o", label="shared (filled)"),
                        Line2D([], [], color="gray", linestyle="", marker="s", markerfacecolor="white", label="unshared (hollow)")]
            ax.legend(handles=handles, fontsize="small")
        return _save(fig, self.out / f"{self.split}_{_safe(self.metric)}_vs_params.png")


def _safe(name: str) -> str:
    return name.replace("/", "_")
