"""The aggregate and gap tables as rows of text, shared by the terminal, Markdown and HTML."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from psx.report.aggregate import lower_is_better

STD_NOTE = "mean ± sample std (ddof=1) over seeds; – where n = 1 (no spread from one run)"
HEADER_NAMES = {"train_size": "train size", "model": "model", "dataset": "dataset"}


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> str:
    if is_missing(value):
        return "–"
    value = float(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


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
        "n", f"val {metric}", f"test {metric}", "unique params", "unshared-equiv params", "mean wall time (s)",
    ]
    show_incomplete = bool(len(agg)) and agg["not_completed"].sum() > 0
    if show_incomplete:
        headers.append("not completed")
    rows = []
    for row in agg.to_dict("records"):
        cells = [key_text(k, row[k], row) for k in by] + [
            str(row["n"]),
            mean_std(row.get(f"val/{metric} mean"), row.get(f"val/{metric} std")),
            mean_std(row.get(f"test/{metric} mean"), row.get(f"test/{metric} std")),
            count(row["params/unique"]),
            count(row["params/unshared_equiv"]),
            "–" if is_missing(row["wall_seconds mean"]) else f"{row['wall_seconds mean']:.1f}",
        ]
        if show_incomplete:
            cells.append(str(row["not_completed"]))
        rows.append(cells)
    return headers, rows


def gap_table(gaps: pd.DataFrame, metric: str) -> tuple[list[str], list[list[str]]]:
    if gaps.empty:
        return [], []
    pair_by = [c for c in gaps.columns if c not in GAP_COLUMNS]
    column = gaps["metric"].iloc[0]
    sign = "< 0" if lower_is_better(metric) else "> 0"
    headers = [HEADER_NAMES.get(k, k) for k in pair_by] + [
        "shared", "unshared", f"{column} shared", f"{column} unshared", f"gap shared − unshared ({sign}: sharing helps)",
    ]
    rows = []
    for row in gaps.to_dict("records"):
        rows.append([key_text(k, row[k], row) for k in pair_by] + [
            row["shared_model"], row["unshared_model"], number(row["shared_mean"]), number(row["unshared_mean"]),
            f"{row['gap']:+.3f} ± {number(row['gap_se'])}",
        ])
    return headers, rows


GAP_COLUMNS = ("family", "shared_model", "unshared_model", "train_examples", "metric", "shared_mean",
               "unshared_mean", "gap", "gap_se", "n_shared", "n_unshared")


def failed_rows(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Every run that did not complete, with what it was and why it stopped."""
    rows = []
    for row in runs[runs["status"] != "completed"].to_dict("records"):
        rows.append({
            "run": row["run"], "status": row["status"], "model": key_text("model", row.get("model"), row),
            "train size": key_text("train_size", row.get("train_size"), row), "seed": key_text("seed", row.get("seed"), row),
            "error": "" if is_missing(row.get("error")) else str(row["error"]), "path": row["path"],
        })
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])
