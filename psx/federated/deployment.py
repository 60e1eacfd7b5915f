"""psx's federated run on Flower's deployment engine: a SuperLink, a SuperNode per client, `flwr run`.

`psx flower-app DIR [overrides]` (psx.federated.app_project) writes a Flower app whose components
are `server_app` and `client_app` below and whose run config carries the psx overrides and the
run folder. `flwr run DIR <superlink>` then starts:

- `server_app` in the SuperLink's ServerApp process: it runs `psx train <overrides>` into the run
  folder, with the grid the SuperLink gives it where psx would start a simulation, so the run
  folder (metrics.csv, summary.json, checkpoint, trackers) and `trainer.resume` are every psx
  run's; a run folder that holds a completed run is skipped, an interrupted one continues;
- `client_app` on every SuperNode: it composes the same config from the run config, loads the
  data set on its own machine (node config `data-dir`, else PSX_DATA_DIR or psx's default) and
  trains the partition its node config names (`partition-id`, 0 to federated.clients - 1). The
  server's starting model comes with the first message (client_hello); the client keeps its own
  tensors (FedPer's head, a local-only model) under node config `state-dir`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shlex
from functools import partial
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from psx.checkpoint import load_checkpoint, save_checkpoint
from psx.federated.client import ClientSetup, FederatedClient, read_hello
from psx.federated.grid import deployed

OVERRIDES_KEY = "psx-overrides"  # run config: the `psx train` overrides, one string
RUN_DIR_KEY = "psx-run-dir"      # run config: the run folder, on the SuperLink's machine
DATA_DIR_KEY = "data-dir"        # node config: where this machine keeps the data sets
STATE_DIR_KEY = "state-dir"      # node config: where this client keeps its own tensors between rounds

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    """`psx train` with the app's overrides, on the SuperLink's grid; a run that does not complete
    fails Flower's run too, with psx's one line."""
    from psx.cli import train_command

    overrides = shlex.split(str(context.run_config[OVERRIDES_KEY]))
    run_dir = str(context.run_config[RUN_DIR_KEY])
    # psx logs a line per round; Flower's dozen per round and its HTTP client's line per request
    # (this process is the run's own, started by the SuperLink) would bury them; errors still show.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with deployed(grid):
        try:
            status = train_command([*overrides, f"hydra.run.dir='{run_dir}'"])
        except SystemExit as e:  # psx's one-line errors end with an exit status
            status = e.code
    if status:
        raise RuntimeError(f"psx train ended with exit status {status}; see {run_dir}/summary.json")


# This process's client (a SuperNode may run several messages in one ClientApp process), by run folder.
_CLIENTS: dict[str, FederatedClient] = {}


@client_app.query()
def identify(message: Message, context: Context) -> Message:
    initial_state, frozen = read_hello(message)
    folder = _client_folder(context)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / f"initial-{_partition(context)}.pt", {"model": initial_state, "frozen": frozen})
    _CLIENTS.pop(_run_dir(context), None)  # a resumed run may start from another model
    return _client(context).identify(message, context)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    return _client(context).train(message, context)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return _client(context).evaluate(message, context)


def _client(context: Context) -> FederatedClient:
    key = _run_dir(context)
    if key not in _CLIENTS:
        _CLIENTS.clear()
        _CLIENTS[key] = FederatedClient(client_setup(context))
    return _CLIENTS[key]


def client_setup(context: Context) -> ClientSetup:
    """The client's half of psx.federated.run.federated_fit, from the run config, on this machine."""
    from psx.cli import compose_checked
    from psx.data import describe
    from psx.federated.run import DataRecipe, _plain
    from psx.federated.sharing import shared_keys
    from psx.models import build_model
    from psx.tasks import task_for

    overrides = shlex.split(str(context.run_config[OVERRIDES_KEY]))
    if context.node_config.get(DATA_DIR_KEY):  # this machine's data folder, for the checks too
        overrides.append(f"paths.data_dir='{context.node_config[DATA_DIR_KEY]}'")
    cfg = compose_checked(overrides)
    fed, spec = cfg.federated, describe(cfg.dataset)
    build = partial(build_model, cfg.model, spec)
    folder = _client_folder(context)
    start = load_checkpoint(folder / f"initial-{_partition(context)}.pt")
    return ClientSetup(
        build_model=build, initial_state=start["model"], frozen=list(start["frozen"]),
        task=task_for(spec, cfg.model), trainer=_plain(cfg.trainer),
        source=DataRecipe(_plain(cfg.dataset), str(cfg.paths.data_dir), _plain(fed)), source_key=_run_dir(context),
        classes=spec.num_classes, seed=cfg.seed, local_epochs=fed.local_epochs,
        shared=shared_keys(build(), str(fed.shared), list(fed.local_layers)), state_dir=folder / "clients",
        threads=cfg.device.num_threads,
    )


def _run_dir(context: Context) -> str:
    return str(context.run_config[RUN_DIR_KEY])


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _client_folder(context: Context) -> Path:
    """Per run folder (a resumed run finds its clients' tensors again), under node config
    state-dir, else psx's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = context.node_config.get(STATE_DIR_KEY) or cache / "psx" / "flower-clients"
    return Path(str(base)) / hashlib.sha256(_run_dir(context).encode()).hexdigest()[:16]

