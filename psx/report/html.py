"""report.html: one self-contained page (images as data: URIs, inline CSS, no scripts, no links
to anything outside the file), so it opens anywhere without a network. Every string that comes
from a run (names, config values, errors) is escaped."""
from __future__ import annotations

import base64
import datetime as dt
import platform
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

import psx
from psx.report.tables import STD_NOTE

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td { background: #fff0f0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-size: 0.9em; }
"""


def table(headers: list[str], rows: list[list[str]], row_class: str = "", table_id: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{escape(str(c))}</td>' if _numeric(c) else f"<td>{escape(str(c))}</td>" for c in row
        )
        body.append(f'<tr class="{row_class}">{cells}</tr>' if row_class else f"<tr>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(cell: Any) -> bool:
    text = str(cell).replace(",", "").replace("±", "").replace("–", "").replace(" ", "").replace("+", "")
    return bool(text) and text.replace(".", "").replace("-", "").isdigit()


def image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)} ({escape(path.name)})</figcaption></figure>")


def environment(runs: pd.DataFrame) -> list[list[str]]:
    """What produced the runs (as recorded in them) and what produced this page."""
    def values(column: str) -> str:
        found = runs[column].dropna().astype(str).unique() if column in runs else []
        return ", ".join(sorted(found)) or "not recorded"

    return [
        ["psx version (runs)", values("psx_version")],
        ["torch version (runs)", values("torch_version")],
        ["device (runs)", values("device")],
        ["sources", values("source")],
        ["report made by", f"psx {psx.__version__}, Python {platform.python_version()}, "
                           f"{dt.datetime.now().astimezone().isoformat(timespec='seconds')}"],
    ]


def render(*, result: dict[str, Any], figures: list[tuple[Path, str]], sweeps: list[dict[str, Any]],
           config_common: str, config_varying: list[list[str]], runs: pd.DataFrame) -> str:
    title = result["title"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p id="summary">{escape(result["summary_line"])}</p>',
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in result["notes"]]
    parts += ["<h2>Results</h2>", table(*result["aggregate"], table_id="aggregate"), f'<p class="note">{escape(STD_NOTE)}</p>']
    if result["gap"][0]:
        parts += ["<h2>Arms against their reference</h2>", table(*result["gap"], table_id="gap"),
                  f'<p class="note" id="reading">{escape(result["reading"])}</p>']
    if figures:
        parts.append("<h2>Plots</h2>")
        parts += [image(path, caption) for path, caption in figures]
    parts += left_out(result["left_out"])
    if sweeps:
        parts.append("<h2>Command</h2>")
        for sweep in sweeps:
            parts.append(f"<p>Sweep <code>{escape(sweep['dir'])}</code>:</p><pre>{escape(sweep['command'])}</pre>")
    parts.append("<h2>Config</h2>")
    if config_varying:
        parts += ["<p>Keys that differ between runs:</p>", table(["key", "values"], config_varying)]
    parts += ["<p>Keys every run shares:</p>", f"<pre>{escape(config_common)}</pre>"]
    parts += ["<h2>Environment</h2>", table(["", ""], environment(runs)), "</body></html>"]
    return "\n".join(parts) + "\n"


def left_out(rows: list[dict[str, Any]]) -> list[str]:
    parts = ["<h2>Runs left out of the numbers or with damaged files</h2>"]
    if not rows:
        return parts + ["<p>None: every run completed and every file could be read.</p>"]
    headers = list(rows[0])
    return parts + [table(headers, [[r[h] for h in headers] for r in rows], row_class="failed", table_id="failed")]
