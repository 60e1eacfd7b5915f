"""What one training step and one evaluation mean for each kind of problem.

The trainer only asks a task for an epoch's batches, a loss, and an evaluation, so it knows
nothing about models or data sets:

    batches = task.epoch(train, batch_size, shuffler, augment, augmenter, state=None)
    x, y, count = batches.batch(i)          # i in range(batches.steps); count: examples or tokens
    loss = task.loss(model, x, y, batches)  # mean loss of the batch
    task.evaluate(model, split, batch_size) -> {"loss": ..., "acc": ...}
    batches.state()                         # what a mid-epoch checkpoint must keep
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from psx.data.spec import MULTITASK, TOKENS, DataSpec
from psx.data.tensors import Tokens


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class ShuffledBatches:
    """Examples in a seeded random order, `batch_size` at a time."""

    def __init__(self, split, batch_size, shuffler, augment, augmenter, state=None):
        self.split, self.batch_size, self.augment, self.augmenter = split, batch_size, augment, augmenter
        order = state["order"] if state is not None else torch.randperm(len(split), generator=shuffler)
        self.order = order.to(split.y.device, non_blocking=True)
        self.steps = math.ceil(len(split) / batch_size)

    def batch(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        x, y = self.split.batch(idx, self.augment, self.augmenter)
        return x, y, len(idx)

    def state(self) -> dict:
        return {"order": self.order.cpu()}


class Classification:
    selection_metric = "acc"  # the validation metric that picks the best epoch
    mode = "max"
    unit = "samples"  # what throughput counts: time/samples_per_s

    def epoch(self, train, batch_size, shuffler, augment=None, augmenter=None, state=None):
        return ShuffledBatches(train, batch_size, shuffler, augment, augmenter, state)

    def steps_per_epoch(self, train, batch_size: int) -> int:
        return math.ceil(len(train) / batch_size)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches=None) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def train_metrics(self, loss: float) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split, batch_size: int) -> dict[str, float]:
        model.eval()
        device = _device(model)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, len(split), batch_size):
            x, y = split.batch(slice(start, start + batch_size))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = len(split)
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}


class MultiTaskClassification(Classification):
    """One label per task (y: (N, tasks)); loss = weighted sum of the tasks' cross-entropies.
    Selection uses `acc`, the mean of the per-task accuracies `acc/<task>`."""

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        self.tasks = list(tasks)
        weights = weights or {}
        self.weights = torch.tensor([float(weights.get(task, 1.0)) for task in self.tasks])

    def loss(self, model, x, y, batches=None):
        logits = model(x)  # (B, tasks, classes)
        per_task = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(0)
        return (per_task * self.weights.to(per_task.device)).sum()

    @torch.no_grad()
    def evaluate(self, model, split, batch_size):
        model.eval()
        device = _device(model)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros(len(self.tasks), device=device, dtype=torch.long)
        for start in range(0, len(split), batch_size):
            x, y = split.batch(slice(start, start + batch_size))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x).float()
            per_task = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).sum(0)
            loss_sum += (per_task * self.weights.to(device)).sum()
            correct += (logits.argmax(2) == y).sum(0)
        n = len(split)
        accuracies = (correct.double() / n).tolist()
        metrics = {"loss": loss_sum.item() / n, "acc": sum(accuracies) / len(accuracies)}
        metrics.update({f"acc/{task}": acc for task, acc in zip(self.tasks, accuracies)})
        return metrics


class StreamWindows:
    """The classic PTB batching: `batch_size` contiguous streams, read in order `bptt` tokens at a
    time; the model's recurrent state runs on from one window to the next (detached)."""

    def __init__(self, tokens, batch_size: int, bptt: int, state=None):
        self.streams = tokens.streams(batch_size)  # (steps, batch_size)
        self.bptt = bptt
        self.steps = math.ceil((len(self.streams) - 1) / bptt)
        self.carry = None if state is None else state["carry"]

    def batch(self, i: int):
        x, y = Tokens.window(self.streams, i * self.bptt, self.bptt)
        return x, y, y.numel()

    def state(self) -> dict:
        carry = None if self.carry is None else tuple(t.cpu() for t in self.carry)
        return {"carry": carry}


def _detach(state):
    if state is None:
        return None
    return tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()


class LanguageModeling:
    """Next-word prediction; metric: perplexity over every token, as the classic PTB setup."""

    selection_metric = "ppl"
    mode = "min"
    unit = "tokens"

    def __init__(self, bptt: int):
        self.bptt = bptt

    def epoch(self, train, batch_size, shuffler=None, augment=None, augmenter=None, state=None):
        return StreamWindows(train, batch_size, self.bptt, state)

    def steps_per_epoch(self, train, batch_size: int) -> int:
        return math.ceil((len(train) // batch_size - 1) / self.bptt)

    def loss(self, model, x, y, batches):
        carry = batches.carry
        if carry is not None:
            carry = tuple(t.to(x.device) for t in carry)
        logits, carry = model(x, carry)
        batches.carry = _detach(carry)  # truncated backpropagation through time
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def train_metrics(self, loss: float) -> dict[str, float]:
        return {"train/ppl": math.exp(min(loss, 50.0))}

    @torch.no_grad()
    def evaluate(self, model, tokens, batch_size):
        model.eval()
        device = _device(model)
        windows = StreamWindows(tokens, batch_size, self.bptt)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        count = 0
        for i in range(windows.steps):
            x, y, n = windows.batch(i)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits, windows.carry = model(x, windows.carry)
            loss_sum += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
            count += n
        loss = loss_sum.item() / count
        return {"loss": loss, "ppl": math.exp(loss)}


def task_for(spec: DataSpec, cfg_model):
    """The training objective and metrics for this kind of data (task weights from the model config)."""
    if spec.kind == TOKENS:
        return LanguageModeling(spec.seq_len)
    if spec.kind == MULTITASK:
        return MultiTaskClassification(spec.tasks, cfg_model.get("task_weights"))
    return Classification()
