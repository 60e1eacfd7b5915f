"""`psx report`: read runs, print the comparison, write CSV/Markdown/PNG/HTML beside the sweep."""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import pandas as pd

from psx.errors import PsxError
from psx.report import aggregate as agg_mod
from psx.report import compare, tables, terminal
from psx.report.output import Staging
from psx.report.records import RunSet
from psx.report.runs import default_path, load_local

DESCRIPTION = """Compare runs: mean ± std over seeds per (dataset, model, train size); each arm of a family
against the family's reference arm (paired 95% intervals, Holm-corrected verdicts, seeds needed); plots
and one self-contained report.html. Reads every run folder below the paths (default: the most recent
sweep under ./outputs/multirun, else the most recent run), W&B run folders too, or runs fetched from
W&B with --wandb. Damaged runs are listed with the reason and left out of the numbers."""

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
    p.add_argument("--min-effect", type=float, metavar="GAP",
                   help="where no difference is detected, say how many seeds would resolve a gap of this size "
                        "(default: the observed gap), e.g. 0.01 for one point of accuracy")
    p.add_argument("--x", metavar="KEY", help="add a figure of the metric against KEY: a dotted config key or summary "
                                             "field with numbers (model.soft.strength, model.compression, "
                                             "params/added_per_task); include a grid key in --by too")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the files (default: <sweep>/report)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B's server instead of folders")
    p.add_argument("--group", help="with --wandb: only runs of this group (the sweep)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return report(args)
    except PsxError:
        raise
    except Exception as e:  # whatever a damaged folder holds, psx report answers in one line
        if os.environ.get("PSX_DEBUG"):
            raise
        detail = str(e).splitlines()[0] if str(e) else ""
        raise PsxError(f"report failed: {type(e).__name__}: {detail} (set PSX_DEBUG=1 for the traceback)") from None


def report(args) -> int:
    started = time.perf_counter()
    runset, out, source = load(args)
    by = agg_mod.resolve_by(runset.runs, runset.config_keys, _split(args.by))
    if not (runset.runs["status"] == "completed").any():  # nothing to count: say why, run by run
        terminal.print_left_out(terminal.console(), tables.left_out_rows(runset.runs))
        raise PsxError(f"no run completed, nothing to compare ({len(runset.runs)} runs, listed above)")
    metric = agg_mod.resolve_metric(runset.runs, args.metric)
    if args.x is not None and args.x not in runset.runs.columns:
        raise PsxError(f"unknown --x key '{args.x}': no run records it (use a dotted config key or a summary field)")
    result = compute(runset, by, metric, source, args.min_effect)
    with Staging(out) as folder:
        files = write(result, runset, by, metric, folder, args.x)
    terminal.print_report(result, metric, by, files, str(out), time.perf_counter() - started)
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


def compute(runset: RunSet, by: list[str], metric: str, source: str, min_effect: float | None) -> dict:
    """Every table of the report, as data and as text."""
    runs = runset.runs
    aggregate = agg_mod.aggregate(runs, by, metric)
    gaps = compare.compare(runs, by, metric, min_effect)
    mixed = agg_mod.mixed_keys(runs, runset.config_keys, by)
    notes = []
    if mixed:
        notes.append(f"note: runs in one row differ in {', '.join(mixed)}; add them to --by to separate them")
    counts = runs["status"].value_counts()
    summary_line = (f"{len(runs)} run{'s' if len(runs) != 1 else ''} from {source}: "
                    + ", ".join(f"{int(n)} {status}" for status, n in counts.items()))
    better = "lower" if agg_mod.lower_is_better(metric) else "higher"
    return {
        "title": f"psx report: {metric} ({better} is better) by {', '.join(by)}", "summary_line": summary_line,
        "aggregate_frame": aggregate, "gaps": gaps, "notes": notes,
        "aggregate": tables.aggregate_table(aggregate, by, metric), "gap": tables.gap_table(gaps, metric),
        "gap_parts": gap_parts(gaps, metric), "left_out": tables.left_out_rows(runs),
        "reading": compare.READING.format(m=gaps.attrs.get("comparisons", 0)) if not gaps.empty else "",
    }


def gap_parts(gaps: pd.DataFrame, metric: str) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The gap table split per pair of arms (for the terminal): (title, headers, rows, note), the
    note naming the rows whose runs could not be paired, in case the narrow terminal drops 'runs'."""
    parts = []
    if gaps.empty:
        return parts
    for _, part in gaps.groupby(["model", "reference_model"], sort=False):
        headers, rows = tables.gap_table(part.reset_index(drop=True), metric)
        keep = [i for i, h in enumerate(headers) if h not in ("arm", "reference")]
        keys = [i for i, h in enumerate(headers) if i < headers.index("arm")]
        unpaired = [" ".join(row[i] for i in keys) or "all" for row, method in zip(rows, part["method"]) if method != "paired"]
        note = (f"not paired (no one-to-one match of seeds and training subsets), Welch's interval instead: {'; '.join(unpaired)}"
                if unpaired else "")
        parts.append((tables.gap_title(part.iloc[0].to_dict(), metric), [headers[i] for i in keep],
                      [[r[i] for i in keep] for r in rows], note))
    return parts


def write(result: dict, runset: RunSet, by: list[str], metric: str, folder: Path, x: str | None = None) -> list[str]:
    """Every file of the report into `folder`; returns their names in the order written."""
    runset.runs.to_csv(folder / "summary.csv", index=False)
    result["aggregate_frame"].to_csv(folder / "aggregate.csv", index=False)
    names = ["summary.csv", "aggregate.csv"]
    if not result["gaps"].empty:
        result["gaps"].to_csv(folder / "gaps.csv", index=False)
        names.append("gaps.csv")
    figures = []
    if (result["aggregate_frame"]["n"] > 0).any():
        from psx.report.plots import Plotter  # matplotlib only when there is something to plot

        figures = Plotter(runset.runs, runset.curves, by, metric, folder, x).all()
    (folder / "aggregate.md").write_text(_markdown(result, figures), encoding="utf-8")
    config_common, config_varying = config_split(runset)
    from psx.report.html import render

    page = render(result=result, figures=figures, sweeps=runset.sweeps, config_common=config_common,
                  config_varying=config_varying, runs=runset.runs)
    (folder / "report.html").write_text(page, encoding="utf-8")
    return [*names, "aggregate.md", *(p.name for p, _ in figures), "report.html"]


def _markdown(result: dict, figures) -> str:
    parts = [f"# {result['title']}", "", result["summary_line"], "", tables.markdown(*result["aggregate"]), "",
             f"_{tables.STD_NOTE}_", ""]
    parts += [n + "\n" for n in result["notes"]]
    if result["gap"][0]:
        parts += ["## Arms against their reference", "", tables.markdown(*result["gap"]), "", f"_{result['reading']}_", ""]
    left_out = result["left_out"]
    if left_out:
        headers = [h for h in left_out[0] if h != "path"]
        parts += ["## Runs left out of the numbers or with damaged files", "",
                  tables.markdown(headers, [[r[h] for h in headers] for r in left_out]), ""]
    parts += [f"![{caption}]({path.name})" for path, caption in figures]
    return "\n".join(parts) + "\n"
