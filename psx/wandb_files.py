"""Read what an offline W&B run wrote to disk, without a server.

W&B (0.19 and later) keeps an offline run's config, history and summary only in its transaction
log, `<run folder>/wandb/offline-run-*/run-<id>.wandb`: a LevelDB-style log (a 7-byte header
":W&B", magic 0xBEE1, version; then 32 KiB blocks of chunks, each chunk a 7-byte header of
crc32c, length, type FULL/FIRST/MIDDLE/LAST) whose records are `wandb.proto` Record messages.
This is the same file `wandb sync` uploads.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = FILE_HEADER.size, b""
    while pos + CHUNK_HEADER.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER.size:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero fill at the end of a block or file
            pos += room
            continue
        chunk = data[pos + CHUNK_HEADER.size: pos + CHUNK_HEADER.size + length]
        pos += CHUNK_HEADER.size + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """{'id', 'name', 'group', 'tags', 'config', 'summary', 'history'} of one offline-run-* folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    (log_file,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "tags": []}
    for raw in _records(log_file):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, name=record.run.display_name, group=record.run.run_group,
                       project=record.run.project, tags=list(record.run.tags))
            _apply(run["config"], record.run.config.update)
        elif kind == "config":
            _apply(run["config"], record.config.update)
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            _apply(run["summary"], record.summary.update)
    # W&B wraps each config value as {"value": ...}; unwrap for callers.
    run["config"] = {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in run["config"].items()}
    run["config"].pop("_wandb", None)
    return run


def _apply(target: dict[str, Any], items) -> None:
    for item in items:
        target[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
