"""Read a psx run folder's files, never raising: each reader returns (content, problem or None).

The problem is one line naming the file and what is wrong with it, which the report lists with
the run. summary.json problems leave the run out of the numbers; a damaged config.yaml or
metrics.csv only costs the run its config keys or its learning curve.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

JSON_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, why not): missing, a folder, unreadable, or not UTF-8 text."""
    if path.is_dir():
        return None, f"{path.name} is a folder, not a file"
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"{path.name} cannot be read ({e.strerror or e})"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, f"{path.name} is not text (binary data)"


def read_summary(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.exists() and not path.is_symlink():
        return {}, "no summary.json (the run stopped before writing it)"
    text, problem = read_text(path)
    if problem:
        return {}, problem
    if not text.strip():
        return {}, "summary.json is empty"
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        return {}, f"summary.json is not valid JSON ({e.msg}: line {e.lineno}, column {e.colno})"
    if not isinstance(summary, dict):
        return {}, f"summary.json is a JSON {JSON_KINDS.get(type(summary), type(summary).__name__)}, not an object"
    return summary, None


def read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """.hydra/config.yaml as a tree, interpolations resolved where they can be (e.g. paths.data_dir's
    ${oc.env:...} with this process's environment); a run without one simply has no config keys."""
    if not path.exists():
        return {}, None
    text, problem = read_text(path)
    if problem:
        return {}, f".hydra/{problem} (its config keys are left out)"
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, f".hydra/config.yaml is not valid YAML{where} (its config keys are left out)"
    if config is None:
        return {}, None
    if not isinstance(config, dict):
        return {}, ".hydra/config.yaml is not a mapping (its config keys are left out)"
    return resolve(config), None


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Resolve ${...} per top-level key; a key whose interpolation cannot be resolved stays as written."""
    from omegaconf import OmegaConf

    try:
        tree = OmegaConf.create(config)
    except Exception:  # keys OmegaConf cannot hold (non-string keys): keep the text as written
        return config
    resolved = {}
    for key in config:
        try:
            node = tree[key]
            resolved[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception:  # an unknown resolver (${hydra:...}) or a missing variable
            resolved[key] = config[key]
    return resolved


def read_curves(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """metrics.csv as numbers, one row per epoch; a damaged file costs only the learning curve."""
    if not path.exists() and not path.is_dir():
        return None, None
    text, problem = read_text(path)
    if problem:
        return None, f"{problem} (learning curve left out)"
    if not text.strip():
        return None, None
    try:
        curves = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, ValueError) as e:
        return None, f"metrics.csv is malformed ({str(e).splitlines()[0]}; learning curve left out)"
    if "epoch" not in curves.columns:
        return None, "metrics.csv has no epoch column (learning curve left out)"
    for column in curves.columns:
        numbers = pd.to_numeric(curves[column], errors="coerce")
        bad = curves[column][numbers.isna() & curves[column].notna()]
        if len(bad):
            row = int(bad.index[0]) + 2  # the header is line 1
            return None, (f"metrics.csv line {row}: {column} is {bad.iloc[0]!r}, not a number "
                          "(learning curve left out)")
        curves[column] = numbers
    return curves, None
