"""The Flower ClientApp: one psx client per partition of the training data.

Each message is answered from scratch, so a client behaves the same in whichever simulation
worker (or SuperNode) runs it and after a resume: the model is rebuilt as the server's initial
model, the client's own tensors (FedPer's head, a local-only model) are read
from its folder, the received shared tensors are loaded on top, and the random streams are
seeded by (seed, round, client).

What is kept per client lives in `<run>/clients/<id>/round-<r>.pt`: only tensors that never
leave the client. The newest two rounds are kept, because the server's checkpoint can be one
round behind a client that finished the next round before the run was stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from omegaconf import DictConfig
from torch import nn

from psx.checkpoint import load_checkpoint, save_checkpoint
from psx.data.tensors import Split
from psx.federated.local import per_class_counts, train_locally

PARTITION_KEY = "partition-id"  # set by Flower's simulation engine (node_config) for each SuperNode
KEEP_ROUNDS = 2


@dataclass
class ClientData:
    partitions: list[Split]
    val: Split
    test: Split


# Data a worker process has loaded, by source: the engine pickles the ClientApp with every
# message, so large data sets travel as a recipe and are loaded once per worker.
_LOADED: dict[str, ClientData] = {}


@dataclass
class ClientSetup:
    """Everything a client needs; pickled by the engine with every message it sends a client."""
    build_model: Callable[[], nn.Module]
    initial_state: dict[str, torch.Tensor]  # the server's starting model (seeded init, init_from)
    frozen: list[str]  # parameters that do not train (model.freeze)
    task: object
    trainer: DictConfig
    source: Callable[[], ClientData]  # called once per worker process
    source_key: str
    classes: int
    seed: int
    local_epochs: int
    shared: list[str]
    state_dir: Path
    threads: int | None


class FederatedClient:
    def __init__(self, setup: ClientSetup):
        self.setup = setup

    def app(self) -> ClientApp:
        app = ClientApp()
        app.query()(self.identify)
        app.train()(self.train)
        app.evaluate()(self.evaluate)
        return app

    def identify(self, message: Message, context: Context) -> Message:
        """Tell the server which partition this node holds (it samples clients by partition)."""
        record = MetricRecord({PARTITION_KEY: int(context.node_config[PARTITION_KEY])})
        return Message(RecordDict({"metrics": record}), reply_to=message)

    def data(self) -> ClientData:
        if self.setup.source_key not in _LOADED:
            _LOADED.clear()
            _LOADED[self.setup.source_key] = self.setup.source()
        return _LOADED[self.setup.source_key]

    def train(self, message: Message, context: Context) -> Message:
        partition = int(context.node_config[PARTITION_KEY])
        config = message.content["config"]
        psx_round = int(config["psx-round"])
        received = message.content["arrays"].to_torch_state_dict()
        model = self.model(partition, received, before_round=psx_round)
        generator = torch.Generator().manual_seed(_stream(self.setup.seed, psx_round, partition))
        torch.manual_seed(_stream(self.setup.seed, psx_round, partition) + 1)  # dropout
        split = self.data().partitions[partition]
        loss = train_locally(model, split, self.setup.task, self.setup.trainer, self.setup.local_epochs,
                             generator, float(config.get("proximal-mu", 0.0)), received)
        state = model.state_dict()
        self.keep_local(partition, psx_round, state)
        arrays = ArrayRecord({k: state[k] for k in self.setup.shared})
        metrics = MetricRecord({"num-examples": len(split), "train-loss": loss, PARTITION_KEY: partition})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    def evaluate(self, message: Message, context: Context) -> Message:
        partition = int(context.node_config[PARTITION_KEY])
        psx_round = int(message.content["config"]["psx-round"])
        received = message.content["arrays"].to_torch_state_dict()
        model = self.model(partition, received, before_round=psx_round + 1)
        data, batch, classes = self.data(), self.setup.trainer.eval_batch_size, self.setup.classes
        val = per_class_counts(model, data.val, classes, batch)
        test = per_class_counts(model, data.test, classes, batch)
        metrics = MetricRecord({
            PARTITION_KEY: partition, "num-examples": len(data.partitions[partition]),
            "val-correct": val["correct"], "val-loss": val["loss"],
            "test-correct": test["correct"], "test-loss": test["loss"],
        })
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    def model(self, partition: int, received: dict[str, torch.Tensor], before_round: int) -> nn.Module:
        """The client's model: the server's initial model, its own newest kept tensors from a round
        before `before_round`, and the server's shared tensors on top. Clients train on the CPU."""
        if self.setup.threads is not None:
            torch.set_num_threads(self.setup.threads)
        model = self.setup.build_model()
        model.load_state_dict(self.setup.initial_state)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in self.setup.frozen)
        own = self.newest_local(partition, before_round)
        if own is not None:
            model.load_state_dict(own, strict=False)
        model.load_state_dict(received, strict=False)
        return model

    def folder(self, partition: int) -> Path:
        return self.setup.state_dir / str(partition)

    def keep_local(self, partition: int, psx_round: int, state: dict[str, torch.Tensor]) -> None:
        shared = set(self.setup.shared)
        own = {k: v for k, v in state.items() if k not in shared}
        if not own:
            return
        folder = self.folder(partition)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / f"round-{psx_round}.pt", own)
        for old in sorted(folder.glob("round-*.pt"), key=_round_of)[:-KEEP_ROUNDS]:
            old.unlink()

    def newest_local(self, partition: int, before_round: int) -> dict[str, torch.Tensor] | None:
        kept = [p for p in self.folder(partition).glob("round-*.pt") if _round_of(p) < before_round]
        if not kept:
            return None
        return load_checkpoint(max(kept, key=_round_of))  # its digest checked, and dropped


def client_hello(setup: ClientSetup) -> RecordDict:
    """What a deployed client cannot rebuild on its own machine: the server's starting model (its
    seeded init, init_from) and which parameters are frozen; sent once, with the partition query."""
    return RecordDict({"arrays": ArrayRecord(setup.initial_state),
                       "config": ConfigRecord({"frozen": "\n".join(setup.frozen)})})


def read_hello(message: Message) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(initial_state, frozen) from client_hello's message."""
    frozen = str(message.content["config"]["frozen"])
    return message.content["arrays"].to_torch_state_dict(), [name for name in frozen.split("\n") if name]


def _round_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _stream(seed: int, psx_round: int, partition: int) -> int:
    """A distinct, reproducible seed for each (run seed, round, client)."""
    return (seed * 1_000_003 + psx_round) * 10_007 + partition
