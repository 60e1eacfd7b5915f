"""The federated comparison's figure: accuracy per round and per byte sent, one line per arm.

    python -m psx.federated.figures outputs/multirun/<sweep> [-o federated.png]

One row of panels per partition (IID, each Dirichlet alpha); columns: test accuracy of the
clients' models on the whole test set, and on each client's own label distribution (mean over
clients), against rounds; the latter against megabytes communicated. Lines are means over seeds,
bands one standard deviation; the centralised run (federated=none) is the dashed reference.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

COLUMNS = (("round", "test/acc", "test accuracy, whole test set"),
           ("round", "test/acc/client_mean", "test accuracy, own label distribution (client mean)"),
           ("comm/bytes", "test/acc/client_mean", "test accuracy, own distribution, vs bytes sent"))


def load_runs(run_dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(federated rounds: one row per run and round, centralised runs: one row per run), from the
    completed runs among run_dirs; a run whose files cannot be read is left out (`psx report`
    lists such runs with the reason)."""
    rounds, central = [], []
    for run_dir in run_dirs:
        try:
            summary = json.loads((Path(run_dir) / "summary.json").read_text())
            if summary.get("status") != "completed":
                continue
            federated = summary.get("federated") or {}
            split = _split_label(federated) if federated else _split_from_overrides(summary.get("overrides") or [])
            if not federated:
                central.append({"split": split, "seed": summary["seed"], "test/acc": summary["metrics"]["test/acc"]})
                continue
            metrics = pd.read_csv(Path(run_dir) / "metrics.csv")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pd.errors.ParserError):
            continue
        metrics["arm"], metrics["split"], metrics["seed"] = federated["name"], split, summary["seed"]
        rounds.append(metrics)
    return (pd.concat(rounds, ignore_index=True) if rounds else pd.DataFrame()), pd.DataFrame(central)


def _split_label(federated: dict) -> str:
    return "IID" if federated["partition"] == "iid" else f"{federated['partition']} α={federated['alpha']:g}"


def _split_from_overrides(overrides: list[str]) -> str:
    """The centralised arm ignores the partition; it is drawn in every row its sweep job named."""
    chosen = next((o.split("=", 1)[1] for o in overrides if o.startswith("+federated/split=")), "iid")
    if chosen == "iid":
        return "IID"
    name, alpha = chosen.rsplit("_", 1)
    return f"{name} α={float(alpha):g}"


def plot(rounds: pd.DataFrame, central: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    splits = sorted(set(rounds["split"]) | set(central.get("split", [])), key=lambda s: (s != "IID", s))
    arms = sorted(rounds["arm"].unique())
    fig, axes = plt.subplots(len(splits), len(COLUMNS), figsize=(5.2 * len(COLUMNS), 3.8 * len(splits)), squeeze=False)
    for row, split in zip(axes, splits):
        reference = central[central["split"] == split]["test/acc"] if len(central) else pd.Series(dtype=float)
        for ax, (x, y, title) in zip(row, COLUMNS):
            for i, arm in enumerate(arms):
                frame = rounds[(rounds["split"] == split) & (rounds["arm"] == arm)]
                if frame.empty:
                    continue
                stats = frame.groupby("round").agg(x=(x, "mean"), mean=(y, "mean"), std=(y, "std")).fillna(0)
                if x == "comm/bytes":
                    stats["x"] = stats["x"] / 1e6
                ax.plot(stats["x"], stats["mean"], color=f"C{i}", marker="o", markersize=3, label=arm)
                ax.fill_between(stats["x"], stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                color=f"C{i}", alpha=0.18, linewidth=0)
            if len(reference):
                ax.axhline(reference.mean(), color="black", linestyle="--", linewidth=1, label="centralised")
            ax.set_title(f"{split}: {title}", fontsize="medium")
            ax.set_xlabel("MB communicated (sent + received)" if x == "comm/bytes" else "round")
            if x == "round":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.suptitle("What sharing buys across clients (mean ± std over seeds)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m psx.federated.figures", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a sweep folder (or any folder of run folders)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="PNG path (default: <runs>/federated.png)")
    args = parser.parse_args(argv)
    rounds, central = load_runs(sorted(p.parent for p in args.runs.rglob("summary.json")))
    if rounds.empty:
        parser.error(f"no completed federated runs under {args.runs}")
    print(plot(rounds, central, args.out or args.runs / "federated.png"))


if __name__ == "__main__":
    main()
