"""Flower's FedAvg and FedProx strategies, made strict and reproducible for psx.

Flower's strategies do the sampling, the messages and the weighted averaging; psx adds:

- clients are chosen by a seeded draw over partition ids (Flower samples node ids with Python's
  global `random`), so a resumed run trains the same clients in the same rounds;
- replies are averaged in partition order (float sums depend on order; the engine returns them
  in order of arrival);
- a failed or missing reply fails the run with the client's error (Flower alone logs "0 results
  and N failures" and goes on with the unchanged model);
- the bytes of every training message, both ways, are counted from the arrays themselves.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg, FedProx

from psx.errors import PsxError
from psx.federated.client import PARTITION_KEY
from psx.federated.sharing import payload_bytes


class ClientFailed(PsxError):
    """A client's reply carried an error, or never came: the round cannot be trusted."""


@dataclass
class Traffic:
    sent: int = 0      # server -> clients, training messages
    received: int = 0  # clients -> server, training replies

    @property
    def total(self) -> int:
        return self.sent + self.received


@dataclass
class NodeView:
    """What Flower's sampling sees: only the nodes psx chose for the round."""
    node_ids: list[int]

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


@dataclass
class RoundPlan:
    seed: int
    clients: int
    per_round: int
    first_round: int = 0  # rounds finished before this start (a resumed run)
    node_of: dict[int, int] = field(default_factory=dict)  # partition id -> node id
    # Every client holds the same model (all of it shared): one client's evaluation stands for all.
    same_model: bool = False

    def psx_round(self, server_round: int) -> int:
        return self.first_round + server_round

    def chosen(self, psx_round: int) -> list[int]:
        """The partitions that train in this round: all of them, or a seeded draw."""
        if self.per_round >= self.clients:
            return list(range(self.clients))
        return sorted(random.Random(self.seed * 100_003 + psx_round).sample(range(self.clients), self.per_round))


class StrictRounds:
    """The psx behaviour on top of a Flower strategy (mixed in before it)."""

    plan: RoundPlan
    traffic: Traffic
    train_loss: float | None = None
    evaluation: list[Message] | None = None
    expected = 0  # messages sent in the current phase: fewer replies means a client was lost

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid):
        psx_round = self.plan.psx_round(server_round)
        config["psx-round"] = psx_round
        view = NodeView([self.plan.node_of[p] for p in self.plan.chosen(psx_round)])
        messages = list(super().configure_train(server_round, arrays, config, view))
        self.traffic.sent += sum(payload_bytes(m.content[self.arrayrecord_key]) for m in messages)
        self.expected = len(messages)
        return messages

    def aggregate_train(self, server_round: int, replies):
        replies = self._strict(list(replies), self.expected, "training")
        self.traffic.received += sum(payload_bytes(m.content[self.arrayrecord_key]) for m in replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.train_loss = float(metrics["train-loss"])
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid):
        config["psx-round"] = self.plan.psx_round(server_round)
        if self.plan.same_model:
            grid = NodeView([self.plan.node_of[0]])
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.expected = len(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies) -> MetricRecord | None:
        # The per-class counts are turned into metrics by the run (it knows the data's classes).
        self.evaluation = self._strict(list(replies), self.expected, "evaluation")
        return None

    def _strict(self, replies: list[Message], expected: int, what: str) -> list[Message]:
        failed = [m for m in replies if m.has_error()]
        if failed:
            reason = failed[0].error.reason.strip().splitlines()
            raise ClientFailed(f"{len(failed)} of {expected} clients failed in {what}: {reason[-1] if reason else '?'}")
        if len(replies) < expected:
            raise ClientFailed(f"only {len(replies)} of {expected} clients replied in {what} "
                               f"(federated.timeout_s, or a client died)")
        return sorted(replies, key=lambda m: int(_metrics(m)[PARTITION_KEY]))


def _metrics(message: Message) -> MetricRecord:
    return next(iter(message.content.metric_records.values()))


class PsxFedAvg(StrictRounds, FedAvg):
    pass


class PsxFedProx(StrictRounds, FedProx):
    pass


def make_strategy(plan: RoundPlan, proximal_mu: float) -> StrictRounds:
    """FedAvg, or FedProx when mu > 0. Flower's own sampling sees only the nodes psx chose, so
    its fractions are 1 and its minimums 1."""
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=1, min_evaluate_nodes=1,
                  min_available_nodes=1)
    strategy = PsxFedProx(proximal_mu=proximal_mu, **common) if proximal_mu > 0 else PsxFedAvg(**common)
    strategy.plan, strategy.traffic = plan, Traffic()
    return strategy
