"""The report in the terminal, fitted to its width: a cell is never broken ('cnn_sh/ared'); columns
with one value across the table move into its title, then optional columns give way (the files
keep everything), and the table says which."""
from __future__ import annotations

import shutil
import textwrap
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from psx.report import tables

# Columns that may move into the title when every row has the same value.
CONSTANT_OK = ("dataset", "dataset.name", "family", "arm", "reference")


def console() -> Console:
    return Console(width=shutil.get_terminal_size((160, 24)).columns, highlight=False, soft_wrap=False)


def natural_width(headers: list[str], rows: list[list[str]]) -> int:
    """Width of the table with every cell on one line and headers wrapped at spaces."""
    widths = [max([len(w) for w in h.split()] + [len(str(r[i])) for r in rows] + [1]) for i, h in enumerate(headers)]
    return sum(widths) + 3 * len(widths) + 1


def fit(headers: list[str], rows: list[list[str]], width: int, optional: tuple[str, ...]):
    """(headers, rows, title additions, dropped columns) that fit in `width` where possible."""
    headers, rows = list(headers), [list(r) for r in rows]
    moved, dropped = [], []

    def remove(name: str) -> None:
        i = headers.index(name)
        headers.pop(i)
        for row in rows:
            row.pop(i)

    for name in [h for h in headers if h in CONSTANT_OK]:
        values = {r[headers.index(name)] for r in rows}
        if len(values) == 1 and len(rows) > 0:
            moved.append(f"{name} {values.pop()}")
            remove(name)
    for name in optional:
        if natural_width(headers, rows) <= width:
            break
        if name in headers:
            dropped.append(name)
            remove(name)
    return headers, rows, moved, dropped


def show(out: Console, headers: list[str], rows: list[list[str]], title: str, *, caption: str | None = None,
         optional: tuple[str, ...] = (), style: str | None = None) -> None:
    headers, rows, moved, dropped = fit(headers, rows, out.width, optional)
    if moved:
        title = f"{title}; {', '.join(moved)}"
    notes = [caption] if caption else []
    if dropped:
        notes.append(f"not shown at this width: {', '.join(dropped)} (all columns in aggregate.md)")
    table = Table(title=title, caption="\n".join(notes) or None, title_justify="left", caption_justify="left",
                  box=box.SQUARE)
    for i, header in enumerate(headers):  # headers wrap at spaces to the width of their cells
        cells = max([len(str(r[i])) for r in rows] + [len(w) for w in header.split()] + [1])
        table.add_column(textwrap.fill(header, cells), no_wrap=True)
    for row in rows:
        table.add_row(*(Text(str(c)) for c in row), style=style)  # Text: run names are not rich markup
    out.print(table)


def print_report(report: dict[str, Any], metric: str, by: list[str], files: list[str], out_dir: str, seconds: float) -> None:
    out = console()
    out.print(Text(report["summary_line"]), soft_wrap=True)
    better = "lower" if tables.lower_is_better(metric) else "higher"
    show(out, *report["aggregate"], title=f"{metric} ({better} is better) by {', '.join(by)}",
         caption=tables.STD_NOTE, optional=tables.OPTIONAL_AGGREGATE)
    for title, headers, rows, note in report["gap_parts"]:
        show(out, headers, rows, title=title, optional=tables.OPTIONAL_GAP)
        if note:
            out.print(Text(note))
    if report["gap_parts"]:
        out.print(Text(report["reading"]))  # prose wraps at words; paths and reasons below stay whole
    for note in report["notes"]:
        out.print(Text(note))
    print_left_out(out, report["left_out"])
    out.print(Text(f"wrote {out_dir}/: {', '.join(files)} ({seconds:.1f} s)"), soft_wrap=True)


def print_left_out(out: Console, left_out: list[dict[str, Any]]) -> None:
    """One line per run: whole, so a reason can be found with grep however narrow the terminal."""
    if left_out:
        out.print(Text(f"{len(left_out)} runs left out of the numbers or with damaged files:", style="red"))
    for row in left_out:
        what = ", ".join(f"{k} {row[k]}" for k in ("model", "train size", "seed") if row[k] != "–")
        out.print(Text(f"  {row['run']} ({what}): {row['status']}: {row['reason']}"), soft_wrap=True)
