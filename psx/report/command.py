"""`psx report`: read runs, print the comparison, write CSV/Markdown/PNG/HTML beside the sweep."""
from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import pandas as pd

from psx.errors import PsxError
from psx.report import aggregate as agg_mod
from psx.report import tables
from psx.report.runs import RunSet, default_path, load_local

DESCRIPTION = """Compare runs: mean ± std over seeds per (dataset, model, train size), the shared − unshared
gap, plots and one self-contained report.html. Reads every run folder below the paths (default: the
most recent sweep under ./outputs/multirun, else the most recent run), W&B run folders too, or runs
fetched from W&B with --wandb."""

EPILOG = """examples:
  psx report                                         # the latest sweep
  psx report outputs/multirun/2026-11-28/04-46-38-372284
  psx report outputs/multirun --by model,dataset.train_size,trainer.lr --metric loss
  psx report wandb/                                  # local W&B run folders (offline runs too)
  psx report --wandb my-team/psx --group SWEEP_ID --out report-sweep
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other psx error
        raise PsxError(f"report: {message} (see `psx report --help`)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="psx report", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="sweep or run folders (searched recursively)")
    p.add_argument("--by", action="append", metavar="KEYS",
                   help="group by these keys, comma-separated: summary fields (dataset, model, train_size, family, "
                        "shared) or any dotted config key (trainer.lr). Default: dataset,model,train_size")
    p.add_argument("--metric", help="metric to compare, without split: acc, loss, ppl, acc/<task> "
                                    "(default: the runs' selection metric). Lower is better for loss and ppl")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the files (default: <sweep>/report)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B's server instead of folders")
    p.add_argument("--group", help="with --wandb: only runs of this group (the sweep)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    runset, out, source = load(args)
    by = agg_mod.resolve_by(runset.runs, runset.config_keys, _split(args.by))
    metric = agg_mod.resolve_metric(runset.runs, args.metric)
    report = build(runset, by, metric, out, source)
    print_report(report, runset, by, metric, out, time.perf_counter() - started)
    return 0


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [k.strip() for v in values for k in v.split(",") if k.strip()]


def load(args) -> tuple[RunSet, Path, str]:
    if args.group and not args.wandb:
        raise PsxError("--group needs --wandb ENTITY/PROJECT")
    if args.wandb:
        if args.paths:
            raise PsxError("give either run folders or --wandb, not both")
        if args.wandb.count("/") != 1:
            raise PsxError(f"--wandb wants ENTITY/PROJECT, got '{args.wandb}'")
        from psx.report.from_wandb import load_wandb_api

        runset = load_wandb_api(args.wandb, args.group)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{args.wandb}-{args.group or 'all'}")
        return runset, args.out or Path(f"report-wandb-{name}"), f"W&B {args.wandb}" + (f", group {args.group}" if args.group else "")
    paths = args.paths or [default_path(Path.cwd())]
    runset = load_local(paths)
    if args.out:
        out = args.out
    elif len(paths) == 1:
        out = (paths[0] if paths[0].is_dir() else paths[0].parent) / "report"
    else:
        out = Path(*_common_prefix([p.resolve().parts for p in paths])) / "report"
    return runset, out, ", ".join(str(p) for p in paths)


def _common_prefix(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = parts[0]
    for other in parts[1:]:
        n = 0
        while n < min(len(prefix), len(other)) and prefix[n] == other[n]:
            n += 1
        prefix = prefix[:n]
    return prefix or ("/",)


def config_split(runset: RunSet) -> tuple[str, list[list[str]]]:
    """(keys with one value across all runs, as 'key: value' lines; [key, values] for the others)."""
    common, varying = [], []
    for key in sorted({"seed", *runset.config_keys} & set(runset.runs.columns)):
        values = runset.runs[key].map(lambda v: tables.key_text(key, v, {}) if not tables.is_missing(v) else "null").unique()
        if len(values) == 1:
            common.append(f"{key}: {values[0]}")
        else:
            varying.append([key, ", ".join(sorted(values, key=lambda v: agg_mod.sort_key(_number(v))))])
    return "\n".join(common), varying


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None if text == "null" else text


def build(runset: RunSet, by: list[str], metric: str, out: Path, source: str) -> dict:
    """Compute the tables, write every file, return what the terminal shows."""
    runs = runset.runs
    aggregate = agg_mod.aggregate(runs, by, metric)
    gaps = agg_mod.gaps(aggregate, by, metric)
    mixed = agg_mod.mixed_keys(runs, runset.config_keys, by)
    notes = []
    if mixed:
        notes.append(f"note: runs in one row differ in {', '.join(mixed)}; add them to --by to separate them")
    failed = tables.failed_rows(runs)
    counts = runs["status"].value_counts()
    summary_line = (f"{len(runs)} run{'s' if len(runs) != 1 else ''} from {source}: "
                    + ", ".join(f"{int(n)} {status}" for status, n in counts.items()))
    agg_text = tables.aggregate_table(aggregate, by, metric)
    gap_text = tables.gap_table(gaps, metric)

    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "summary.csv", index=False)
    aggregate.to_csv(out / "aggregate.csv", index=False)
    if not gaps.empty:
        gaps.to_csv(out / "gaps.csv", index=False)
    figures = []
    if (aggregate["n"] > 0).any():
        from psx.report.plots import Plotter  # matplotlib only when there is something to plot

        figures = Plotter(runs, runset.curves, by, metric, out).all()
    better = "lower" if agg_mod.lower_is_better(metric) else "higher"
    title = f"psx report: {metric} ({better} is better) by {', '.join(by)}"
    (out / "aggregate.md").write_text(_markdown(title, summary_line, agg_text, gap_text, failed, notes, figures))
    config_common, config_varying = config_split(runset)
    from psx.report.html import render

    page = render(title=title, summary_line=summary_line, aggregate=agg_text, gap=gap_text, figures=figures,
                  failed=failed, sweeps=runset.sweeps, config_common=config_common,
                  config_varying=config_varying, notes=notes, runs=runs)
    (out / "report.html").write_text(page, encoding="utf-8")
    return {"summary_line": summary_line, "aggregate": agg_text, "gap": gap_text, "failed": failed,
            "notes": notes, "figures": figures, "gaps": gaps}


def _markdown(title, summary_line, agg_text, gap_text, failed, notes, figures) -> str:
    parts = [f"# {title}", "", summary_line, "", tables.markdown(*agg_text), "", f"_{tables.STD_NOTE}_", ""]
    parts += [n + "\n" for n in notes]
    if gap_text[0]:
        parts += ["## Shared − unshared", "", tables.markdown(*gap_text), ""]
    if failed:
        parts += ["## Runs that did not complete", "",
                  tables.markdown(list(failed[0]), [list(r.values()) for r in failed]), ""]
    parts += [f"![{caption}]({path.name})" for path, caption in figures]
    return "\n".join(parts) + "\n"


def print_report(report: dict, runset: RunSet, by: list[str], metric: str, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=shutil.get_terminal_size((160, 24)).columns, highlight=False)

    def show(headers, rows, title, caption=None, style=None):
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(Text(str(c)) for c in row), style=style)  # Text: run names are not rich markup
        console.print(table)

    console.print(Text(report["summary_line"]), soft_wrap=True)
    better = "lower" if agg_mod.lower_is_better(metric) else "higher"
    show(*report["aggregate"], title=f"{metric} ({better} is better) by {', '.join(by)}", caption=tables.STD_NOTE)
    if report["gap"][0]:
        show(*report["gap"], title="shared − unshared")
    for note in report["notes"]:
        console.print(Text(note), soft_wrap=True)
    if report["failed"]:
        headers = [h for h in report["failed"][0] if h != "path"]
        show(headers, [[r[h] for h in headers] for r in report["failed"]],
             title=f"{len(report['failed'])} runs did not complete", style="red")
    files = ["summary.csv", "aggregate.csv", "aggregate.md", *(p.name for p, _ in report["figures"]), "report.html"]
    console.print(Text(f"wrote {out}/: {', '.join(files)} ({seconds:.1f} s)"), soft_wrap=True)
