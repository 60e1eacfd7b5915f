"""Runs logged to Weights & Biases, as report rows: from the W&B server (public API) or from the
run folders the W&B client writes locally (wandb/offline-run-*/, wandb/run-*/).

What a W&B run must carry to be reported (the `logger=wandb` integration writes these):

- config: the psx config, flattened to dotted keys as in .hydra/config.yaml ("model.name",
  "model.family", "model.arm", "dataset.name", "dataset.train_size", "seed", "trainer.lr", ...).
  Nested dicts are flattened here too, so logging the nested config also works.
- summary: the fields of summary.json (records.SUMMARY_FIELDS: "status", "error", "train_examples",
  "params/unique", "params/unshared_equiv", "wall_seconds", "psx_version", "torch_version",
  "device", ...) with the final metrics at the top level ("val/acc", "test/acc", "val/loss", ...;
  test at the best-val epoch, as in summary.json's "metrics").
- history: one row per epoch with "epoch" and the metrics.csv columns ("val/acc", "train/loss", ...).
- group: the sweep, so `psx report --wandb ENTITY/PROJECT --group GROUP` finds its runs.

A run without a "status" in its summary gets one from the W&B run state (finished -> completed).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from psx.errors import PsxError
from psx.loggers import flatten
from psx.report.records import RunSet, build_runset, make_record

STATE_TO_STATUS = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "interrupted", "running": "running"}


def to_record(config: dict[str, Any], summary: dict[str, Any], history: list[dict[str, Any]], *,
              run: str, path: str, state: str | None = None) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The one conversion from W&B's (config, summary, history) to a report row and its curves."""
    config = flatten({k: v for k, v in config.items() if not k.startswith("_")})
    summary = {k: v for k, v in summary.items() if not k.startswith("_")}
    if summary.get("status") is None and state:
        summary["status"] = STATE_TO_STATUS.get(state, state)
    record = make_record(summary, config, run=run, source="wandb", path=path)
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in history if "epoch" in row]
    curves = None
    if rows:
        curves = pd.DataFrame.from_records(rows).sort_values("epoch")
        curves.insert(0, "run", run)
    return record, curves


# --- from the server -----------------------------------------------------------------------------


def load_wandb_api(project_path: str, group: str | None) -> RunSet:
    """Runs of ENTITY/PROJECT (optionally one group) through W&B's public API."""
    try:
        import wandb
    except ImportError:
        raise PsxError("--wandb needs the wandb package: pip install wandb") from None
    filters = {"group": group} if group else {}
    records, curves = [], []
    try:
        for run in wandb.Api().runs(project_path, filters=filters):
            history = run.history(samples=10_000, pandas=False)
            record, curve = to_record(dict(run.config), dict(run.summary_metrics), history,
                                      run=f"{run.name} ({run.id})", path=run.url, state=run.state)
            records.append(record)
            if curve is not None:
                curves.append(curve)
    except Exception as e:  # network, authentication, unknown project: the user fixes these
        if isinstance(e, PsxError):
            raise
        raise PsxError(f"W&B: could not read runs of {project_path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not records:
        where = f"{project_path}, group {group}" if group else project_path
        raise PsxError(f"no runs found in W&B project {where}")
    return build_runset(records, curves, [])


# --- from local run folders ---------------------------------------------------------------------


def load_wandb_dir(run_dir: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """A local W&B run folder; one whose files cannot be read is a damaged run, with the reason."""
    try:
        return _read_wandb_dir(run_dir, name)
    except Exception as e:  # a torn or foreign file: the report lists the run instead of stopping
        reason = f"W&B run folder cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        return make_record({"status": "damaged", "error": reason}, {}, run=name, source="wandb", path=str(run_dir)), None


def _read_wandb_dir(run_dir: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Clients that sync write files/config.yaml and files/wandb-summary.json; offline runs of
    recent clients keep everything in the transaction log run-<id>.wandb only."""
    files = run_dir / "files"
    logs = sorted(run_dir.glob("*.wandb"))
    if logs:
        config, summary, history, meta = read_transaction_log(logs[0])
    else:
        config, summary, history, meta = {}, {}, [], {}
    if (files / "config.yaml").exists():
        raw = yaml.safe_load((files / "config.yaml").read_text()) or {}
        config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items()}
    if (files / "wandb-summary.json").exists():
        summary = json.loads((files / "wandb-summary.json").read_text())
    state = meta.get("state")
    if meta.get("name") and meta.get("id"):  # display names repeat across runs; ids do not
        name = f"{meta['name']} ({meta['id']})"
    return to_record(config, summary, history, run=name, path=str(run_dir), state=state)


# W&B's transaction log is a LevelDB-style log: a 7-byte file header (":W&B", magic 0xBEE1,
# version 0), then 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full/first/middle/last),
# each whole record a serialized wandb_internal_pb2.Record.
_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes):
    from wandb.proto import wandb_internal_pb2

    if not data.startswith(_HEADER):
        raise PsxError("not a W&B transaction log (bad header)")
    pos, pending = len(_HEADER), b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            break  # zero padding or a torn write at the end of a killed run: keep what came before
        pos += 7 + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_transaction_log(path: Path) -> tuple[dict, dict, list[dict], dict]:
    """(config, summary, history rows, meta) replayed from a run-<id>.wandb file."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"state": "running"}
    for record in _records(path.read_bytes()):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            meta.update(name=record.run.display_name, id=record.run.run_id, group=record.run.run_group)
            config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
            for item in record.config.remove:
                config.pop(_key(item), None)
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
            for item in record.summary.remove:
                summary.pop(_key(item), None)
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            meta["state"] = "finished" if record.exit.exit_code == 0 else "failed"
    return config, summary, history, meta
