"""The report's tables as (headers, rows) of text, shared by the terminal, Markdown and HTML."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from psx.report.aggregate import lower_is_better
from psx.report.stats import MAX_SEEDS

STD_NOTE = "mean ± sample std (ddof=1) over seeds; – where n = 1 (no spread from one run)"
HEADER_NAMES = {"train_size": "train size", "model": "model", "dataset": "dataset"}
# Terminal columns that give way first when the table is wider than the terminal (the files keep them).
OPTIONAL_AGGREGATE = ("mean wall time (s)", "sharing ratio", "unshared-equiv params", "unique params")
OPTIONAL_GAP = ("95% CI (bootstrap)", "reference", "runs")


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> str:
    if is_missing(value):
        return "–"
    value = float(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def signed(value: Any) -> str:
    return "–" if is_missing(value) else f"{float(value):+.3f}"


def interval(low: Any, high: Any) -> str:
    return "–" if is_missing(low) or is_missing(high) else f"[{signed(low)}, {signed(high)}]"


def mean_std(mean: Any, std: Any) -> str:
    if is_missing(mean):
        return "–"
    return f"{number(mean)} ± {number(std)}"


def count(value: Any) -> str:
    return "–" if is_missing(value) else f"{int(value):,}"


def size_label(train_size: Any, train_examples: Any) -> str:
    """train_size null means the whole training split; say how big that was."""
    if is_missing(train_size):
        return f"all ({count(train_examples)})" if not is_missing(train_examples) else "all"
    return str(int(train_size)) if isinstance(train_size, float) and train_size.is_integer() else str(train_size)


def key_text(key: str, value: Any, row: dict[str, Any]) -> str:
    if isinstance(value, float) and value.is_integer():  # pandas stores an int column with a None as floats
        value = int(value)
    if key in ("train_size", "dataset.train_size"):
        return size_label(value, row.get("train_examples"))
    return "–" if is_missing(value) else str(value)


def aggregate_table(agg: pd.DataFrame, by: list[str], metric: str) -> tuple[list[str], list[list[str]]]:
    headers = [HEADER_NAMES.get(k, k) for k in by] + [
        "n", f"val {metric}", f"test {metric}", "unique params", "unshared-equiv params", "sharing ratio",
        "mean wall time (s)",
    ]
    show_incomplete = bool(len(agg)) and agg["not_completed"].sum() > 0
    if show_incomplete:
        headers.append("left out")
    rows = []
    for row in agg.to_dict("records"):
        ratio = row.get("sharing/ratio")
        cells = [key_text(k, row[k], row) for k in by] + [
            str(row["n"]),
            mean_std(row.get(f"val/{metric} mean"), row.get(f"val/{metric} std")),
            mean_std(row.get(f"test/{metric} mean"), row.get(f"test/{metric} std")),
            count(row["params/unique"]),
            count(row["params/unshared_equiv"]),
            "–" if is_missing(ratio) else f"{ratio:.2f}",
            "–" if is_missing(row["wall_seconds mean"]) else f"{row['wall_seconds mean']:.1f}",
        ]
        if show_incomplete:
            cells.append(str(row["not_completed"]))
        rows.append(cells)
    return headers, rows


GAP_COLUMNS = ("family", "arm", "reference_arm", "model", "reference_model", "metric", "train_examples",
               "sharing/ratio", "mean_arm", "mean_reference", "gap", "ci_low", "ci_high", "boot_low", "boot_high",
               "p", "p_holm", "method", "n_pairs", "n_arm", "n_reference", "unpaired_runs", "spread", "verdict",
               "seeds_needed")


def gap_title(row: dict[str, Any], metric: str) -> str:
    """'cnn_shared − cnn_unshared, test/acc (> 0: cnn_shared better)'."""
    sign = "< 0" if lower_is_better(metric) else "> 0"
    return f"{row['model']} − {row['reference_model']}, {row['metric']} ({sign}: {row['model']} better)"


def gap_table(gaps: pd.DataFrame, metric: str) -> tuple[list[str], list[list[str]]]:
    """One row per comparison; `comparisons` splits it into one table per pair of arms."""
    if gaps.empty:
        return [], []
    pair_by = [c for c in gaps.columns if c not in GAP_COLUMNS]
    headers = [HEADER_NAMES.get(k, k) for k in pair_by] + [
        "arm", "reference", "gap", "95% CI", "95% CI (bootstrap)", "runs", "verdict", "seeds for this gap",
    ]
    rows = []
    for row in gaps.to_dict("records"):
        rows.append([key_text(k, row[k], row) for k in pair_by] + [
            str(row["model"]), str(row["reference_model"]), signed(row["gap"]),
            interval(row["ci_low"], row["ci_high"]), interval(row["boot_low"], row["boot_high"]), runs_text(row),
            row["verdict"], seeds_text(row["seeds_needed"]),
        ])
    return headers, rows


def runs_text(row: dict[str, Any]) -> str:
    """'5 pairs', or '3 + 3 unpaired (Welch)' where the arms could not be paired."""
    if row["method"] == "paired":
        left = f", {row['unpaired_runs']} unpaired left out" if row["unpaired_runs"] else ""
        return f"{row['n_pairs']} pairs{left}"
    return f"{row['n_arm']} + {row['n_reference']} unpaired (Welch)"


def seeds_text(value: Any) -> str:
    if is_missing(value):
        return ""
    return f"> {MAX_SEEDS:,}" if int(value) > MAX_SEEDS else f"≈ {int(value)}"


def left_out_rows(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Every run that is not counted, or whose files are damaged, with what it was and why."""
    problem = runs["problem"].map(lambda v: not is_missing(v) and bool(v))
    rows = []
    for row in runs[(runs["status"] != "completed") | problem].to_dict("records"):
        reasons = [str(row[k]) for k in ("error", "problem") if not is_missing(row.get(k)) and row.get(k)]
        rows.append({
            "run": row["run"], "status": row["status"], "model": key_text("model", row.get("model"), row),
            "train size": key_text("train_size", row.get("train_size"), row), "seed": key_text("seed", row.get("seed"), row),
            "reason": "; ".join(reasons), "path": row["path"],
        })
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])
