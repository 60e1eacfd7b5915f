"""`psx flower-app DIR [--run-dir RUN_DIR] [overrides]`: a Flower app for Flower's deployment engine.

Writes DIR/pyproject.toml: a Flower app whose ServerApp and ClientApp are psx's
(psx.federated.deployment) and whose run config holds the `psx train` overrides and the run
folder. `flwr run DIR <superlink>` sends it to a SuperLink; psx itself (with its federated extra)
must be installed on the SuperLink's machine and on every SuperNode's. The config is checked here
first, so a setting that cannot run is one line now rather than a failed Flower run later.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

import psx
from psx.errors import PsxError
from psx.federated.schema import is_federated

USAGE = ("usage: psx flower-app DIR [--run-dir RUN_DIR] [overrides]\n"
         "  e.g. psx flower-app psx-app federated=fedavg dataset=mnist")
MARKER = "# Written by `psx flower-app`"

NEXT_STEPS = """\
wrote {pyproject} (run folder {run_dir}, {clients} clients); to run it (--insecure: a trial without TLS):
  flower-superlink --insecure --disable-runtime-dependency-installation
  flower-supernode --insecure --superlink 127.0.0.1:8000 --node-config "partition-id=0"
      (one per client, partition-id 0 to {last}; several on one machine need a --port each)
  flwr run {app_dir} <connection> --stream
      (<connection>: a [superlink.<connection>] in ~/.flwr/config.toml with address = "127.0.0.1:8000"
       and insecure = true; see the README's section on Flower's deployment engine)"""


def main(args: list[str], compose: Callable[[list[str]], DictConfig]) -> int:
    """compose: psx.cli.compose_checked (the validated config for one set of overrides)."""
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    app_dir, rest = Path(args[0]), args[1:]
    run_dir = None
    if rest[:1] == ["--run-dir"]:
        if len(rest) < 2:
            raise PsxError("--run-dir needs a folder")
        run_dir, rest = Path(rest[1]), rest[2:]
    cfg = compose(rest)
    if not is_federated(cfg):
        raise PsxError("psx flower-app runs a federated arm: add federated=fedavg, fedprox, fedper or local")
    now = dt.datetime.now()
    run_dir = (run_dir or Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")).resolve()
    pyproject = app_dir / "pyproject.toml"
    if pyproject.exists() and not pyproject.read_text().startswith(MARKER):
        raise PsxError(f"{pyproject} exists and was not written by psx flower-app; choose another folder")
    app_dir.mkdir(parents=True, exist_ok=True)
    pyproject.write_text(project_toml(rest, run_dir))
    print(NEXT_STEPS.format(pyproject=pyproject, run_dir=run_dir, clients=cfg.federated.clients,
                            last=cfg.federated.clients - 1, app_dir=app_dir))
    return 0


def project_toml(overrides: list[str], run_dir: Path) -> str:
    """The app's pyproject.toml: psx's components, and the run config both sides read."""
    value = json.dumps  # a JSON string is a valid TOML basic string
    return f"""{MARKER} (psx {psx.__version__}): one psx federated run for Flower's deployment engine.
# Every machine (SuperLink and SuperNodes) needs psx with its federated extra: pip install -e ".[federated]"
[project]
name = "psx-federated"
version = "1.0.0"
description = {value("psx federated run: " + shlex.join(overrides))}
dependencies = []

[tool.flwr.app]
publisher = "psx"

[tool.flwr.app.components]
serverapp = "psx.federated.deployment:server_app"
clientapp = "psx.federated.deployment:client_app"

[tool.flwr.app.config]
psx-overrides = {value(shlex.join(overrides))}
psx-run-dir = {value(str(run_dir))}
"""
