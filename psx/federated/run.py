"""federated_fit: train one model across simulated clients on Flower's simulation engine.

The server (a Flower ServerApp) holds the shared tensors and runs Flower's strategy round by
round; every client (a Flower ClientApp on a virtual SuperNode) trains on its own partition.
psx adds what every psx run has: a seeded partition, per-round metrics to the loggers, a round
checkpoint to resume from, and a run that fails when a client fails.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports from psx's runs
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's future default, without its warning
logging.getLogger("alembic").setLevel(logging.WARNING)  # Flower's database layer logs its plugins on import

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict  # noqa: E402
from flwr.serverapp import ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch import nn  # noqa: E402

from psx.data.tensors import Data  # noqa: E402
from psx.device import available_cpus  # noqa: E402
from psx.errors import PsxError  # noqa: E402
from psx.federated.client import PARTITION_KEY, ClientData, ClientSetup, FederatedClient, client_hello  # noqa: E402
from psx.federated.evaluation import class_totals, round_metrics  # noqa: E402
from psx.federated.grid import deployment_grid  # noqa: E402
from psx.federated.partition import label_distribution, partition  # noqa: E402
from psx.federated.rounds import FederatedResult, Rounds  # noqa: E402
from psx.federated.schema import check_federated  # noqa: E402
from psx.federated.sharing import shared_keys, shared_parameter_count  # noqa: E402
from psx.federated.strategy import RoundPlan, StrictRounds, make_strategy  # noqa: E402

log = logging.getLogger("psx")

# Data up to this size travels with the client app; larger sets are loaded by each worker.
SHIP_LIMIT_BYTES = 32 * 2**20


class StopAfterRound(Exception):
    """A stop was requested (SIGTERM/SIGINT): raised in the server after the round's checkpoint."""


def client_data(data: Data, federated: DictConfig) -> ClientData:
    parts = partition(data.train.y, federated.clients, federated.partition, federated.partition_seed, federated.alpha)
    return ClientData([data.train.subset(p) for p in parts], data.val, data.test)


@dataclass
class ShippedData:
    data: ClientData

    def __call__(self) -> ClientData:
        return self.data


@dataclass
class DataRecipe:
    """Each worker loads the data set itself (from psx's cache) and draws the same partition."""
    dataset: DictConfig
    data_dir: str
    federated: DictConfig

    def __call__(self) -> ClientData:
        from psx.data import build_data

        return client_data(build_data(self.dataset, data_dir=self.data_dir), self.federated)


def _source(cfg: DictConfig, data: Data, local: ClientData) -> Callable[[], ClientData]:
    size = sum(t.numel() * t.element_size() for split in (data.train, data.val, data.test) for t in (split.x, split.y))
    if size <= SHIP_LIMIT_BYTES:
        return ShippedData(local)
    return DataRecipe(_plain(cfg.dataset), str(cfg.paths.data_dir), _plain(cfg.federated))


def _plain(section: DictConfig) -> DictConfig:
    """A config section on its own, interpolations resolved: what travels to the clients."""
    return OmegaConf.create(OmegaConf.to_container(section, resolve=True))


def federated_fit(cfg: DictConfig, data: Data, build_model_fn: Callable[[], nn.Module], run_dir: Path,
                  on_round: Callable[[dict], None], task, resume: dict[str, Any] | None = None,
                  model: nn.Module | None = None, stop: Any = None,
                  checkpoint_extra: dict[str, Any] | None = None) -> FederatedResult:
    """Train cfg.federated.rounds rounds; returns the trainer's kind of result (best round by
    val/acc, test at that round, one history row per round) plus summary fields."""
    fed = cfg.federated
    check_federated(fed, None, data.spec.kind)
    if model is None:
        torch.manual_seed(cfg.seed)
        model = build_model_fn()
    model = model.cpu()
    keys = shared_keys(model, str(fed.shared), list(fed.local_layers))
    data = data.to(torch.device("cpu"))
    local = client_data(data, fed)
    setup = ClientSetup(
        build_model=build_model_fn, initial_state={k: v.clone() for k, v in model.state_dict().items()},
        frozen=[n for n, p in model.named_parameters() if not p.requires_grad], task=task, trainer=_plain(cfg.trainer),
        source=_source(cfg, data, local), source_key=str(run_dir), classes=data.spec.num_classes, seed=cfg.seed,
        local_epochs=fed.local_epochs, shared=keys, state_dir=Path(run_dir) / "clients",
        threads=cfg.device.num_threads,
    )
    rounds = Rounds(on_round, Path(run_dir) / "checkpoint.pt", checkpoint_extra or {}, resume)
    rounds.adopt_client_state(setup.state_dir)
    if rounds.done < fed.rounds:
        _simulate(cfg, setup, local, rounds, keys, model, stop)
    if rounds.s["best_arrays"]:
        model.load_state_dict(rounds.s["best_arrays"], strict=False)
    return rounds.result(_summary(fed, model, keys, rounds))


def _summary(fed: DictConfig, model: nn.Module, keys: list[str], rounds: Rounds) -> dict[str, Any]:
    last = rounds.s["history"][-1]
    return {
        "federated": {k: OmegaConf.to_container(fed, resolve=True)[k]
                      for k in ("name", "shared", "clients", "rounds", "local_epochs", "fraction", "partition", "alpha")},
        "params/shared_across_clients": shared_parameter_count(model, keys),
        "comm/bytes": int(last["comm/bytes"]),
        "comm/bytes_sent": int(last["comm/bytes_sent"]),
        "comm/bytes_received": int(last["comm/bytes_received"]),
        "rounds_completed": rounds.done,
    }


def _simulate(cfg: DictConfig, setup: ClientSetup, local: ClientData, rounds: Rounds, keys: list[str],
              model: nn.Module, stop: Any) -> None:
    fed = cfg.federated
    plan = RoundPlan(seed=cfg.seed, clients=fed.clients, per_round=max(1, round(fed.fraction * fed.clients)),
                     first_round=rounds.done, same_model=str(fed.shared) == "all")
    strategy = make_strategy(plan, fed.proximal_mu)
    strategy.traffic.sent, strategy.traffic.received = rounds.s["bytes_sent"], rounds.s["bytes_received"]
    start = rounds.s["arrays"] if rounds.s["arrays"] is not None else {k: model.state_dict()[k] for k in keys}
    end_round = partial(_end_round, strategy, rounds, local, setup, cfg, stop)
    timeout = fed.timeout_s if fed.timeout_s is not None else 3600.0

    def serve(grid, hello: RecordDict | None = None) -> None:
        plan.node_of = discover_partitions(grid, fed.clients, timeout, hello)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(start), num_rounds=fed.rounds - rounds.done,
                       timeout=timeout, evaluate_fn=end_round)

    grid = deployment_grid()
    if grid is not None:  # a SuperLink's SuperNodes: each builds its client from the run config and this hello
        serve(grid, client_hello(setup))
        return
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        serve(grid)

    # Clients' failures come back in their replies; their console lines (Ray's actor start and
    # stop notices) would only interleave with psx's round lines.
    ray_args = {"num_cpus": max(available_cpus(), int(fed.client_cpus)), "log_to_driver": False}
    backend = {"client_resources": {"num_cpus": float(fed.client_cpus), "num_gpus": 0.0}, "init_args": ray_args}
    start_ray_keeping_signal_handlers(ray_args)
    # psx prints one line per round instead of Flower's dozen (and its notice that run_simulation,
    # the in-process entry point psx needs, will give way to `flwr run`); errors still show.
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(logging.ERROR)
    try:
        run_simulation(server_app=app, client_app=FederatedClient(setup).app(), num_supernodes=fed.clients,
                       backend_config=backend)
    finally:
        flower_log.setLevel(level)
        import ray

        ray.shutdown()  # Flower shuts Ray down at its end; this covers a start that failed before it


def start_ray_keeping_signal_handlers(ray_args: dict[str, Any]) -> None:
    """Start Ray as Flower would (it skips its own start when Ray is up), then put back psx's
    SIGTERM/SIGINT handlers, which ray.init replaces with ones that exit at once: a stopped run
    must finish its round, checkpoint and end as `interrupted`, as every psx run does."""
    import ray

    if ray.is_initialized():
        return
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, include_dashboard=False,
             logging_level=logging.ERROR, **ray_args)
    if threading.current_thread() is threading.main_thread():
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _end_round(strategy: StrictRounds, rounds: Rounds, local: ClientData, setup: ClientSetup, cfg: DictConfig,
               stop: Any, server_round: int, arrays: ArrayRecord) -> None:
    """Flower calls this after each round's training and evaluation (and once before round 1)."""
    if server_round == 0:
        return None
    psx_round = strategy.plan.psx_round(server_round)
    classes = setup.classes
    shares = label_distribution(torch.cat([p.y for p in local.partitions]), _offsets(local), classes)
    traffic = strategy.traffic
    row = {"epoch": psx_round, "round": psx_round, "train/loss": strategy.train_loss,
           **round_metrics(strategy.evaluation, shares, class_totals(local.val.y, classes), class_totals(local.test.y, classes)),
           "comm/bytes_sent": traffic.sent, "comm/bytes_received": traffic.received, "comm/bytes": traffic.total}
    rounds.end(psx_round, arrays.to_torch_state_dict(), row, checkpoint=cfg.trainer.checkpoint)
    log.info("round %d/%d: val/acc %.4f (clients: mean %.4f, worst %.4f), %s bytes so far", psx_round,
             cfg.federated.rounds, row["val/acc"], row["val/acc/client_mean"], row["val/acc/client_worst"],
             f"{traffic.total:,}")
    if stop is not None and getattr(stop, "stop_requested", False):
        raise StopAfterRound(stop.stop_requested)
    return None


def _offsets(local: ClientData) -> list[torch.Tensor]:
    """Each partition's rows in the concatenation of all partitions' labels."""
    sizes = torch.tensor([len(p) for p in local.partitions])
    starts = sizes.cumsum(0) - sizes
    return [torch.arange(start, start + size) for start, size in zip(starts.tolist(), sizes.tolist())]


def discover_partitions(grid, clients: int, timeout: float, hello: RecordDict | None = None) -> dict[int, int]:
    """Ask every node which partition it holds (Flower numbers nodes at random); `hello` is what a
    deployed client needs from the server before its first round (psx.federated.client.client_hello)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise PsxError(f"only {len(nodes)} of {clients} federated clients connected within {timeout:.0f} s")
        time.sleep(0.1)
    if len(nodes) > clients:  # SuperNodes started by hand: one per partition
        raise PsxError(f"{len(nodes)} SuperNodes are connected for federated.clients={clients}; "
                       "start one per partition-id")
    queries = [Message(hello if hello is not None else RecordDict({"config": ConfigRecord()}), dst_node_id=node,
                       message_type=MessageType.QUERY) for node in nodes]
    replies = list(grid.send_and_receive(queries, timeout=timeout))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != clients:
        reason = failed[0].error.reason if failed else f"{len(replies)} of {clients} replied"
        raise PsxError(f"federated clients did not start: {reason.strip().splitlines()[-1]}")
    node_of = {int(r.content["metrics"][PARTITION_KEY]): r.metadata.src_node_id for r in replies}
    if sorted(node_of) != list(range(clients)):  # SuperNodes started by hand: each partition-id once
        held = sorted(int(r.content["metrics"][PARTITION_KEY]) for r in replies)
        raise PsxError(f"the {clients} clients must hold partition-id 0 to {clients - 1} once each; they hold {held}")
    return node_of


class FederatedTrainer:
    """Stands in for psx.trainer.Trainer in psx/train.py when cfg.federated is set: same
    constructor arguments, same fit(), same stop flag for the signal handlers."""

    def __init__(self, cfg: DictConfig, on_epoch: Callable[[dict], None], checkpoint_path: Path,
                 checkpoint_extra: dict[str, Any]):
        self.cfg, self.on_epoch = cfg, on_epoch
        self.run_dir, self.checkpoint_extra = Path(checkpoint_path).parent, checkpoint_extra
        self.stop_requested = False
        self.first_step_done_at: float | None = None

    def fit(self, model: nn.Module, data: Data, task, resume: dict[str, Any] | None = None) -> FederatedResult:
        from psx.models import build_model

        try:
            result = federated_fit(self.cfg, data, partial(build_model, self.cfg.model, data.spec), self.run_dir,
                                   self.on_epoch, task, resume=resume, model=model, stop=self,
                                   checkpoint_extra=self.checkpoint_extra)
        except Exception as e:
            # A stop signal can reach the clients' worker processes too (Ctrl-C, a batch system
            # stopping the job): a round they could not finish is an interruption, not a failure.
            if isinstance(e, StopAfterRound) or self.stop_requested:
                from psx.trainer import StopRequested

                raise StopRequested(self.stop_requested or str(e)) from None
            raise
        self.first_step_done_at = result.first_round_done_at
        return result
