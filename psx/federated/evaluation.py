"""A round's metrics from the clients' per-class counts.

Every client evaluates its own model (the shared tensors it received plus whatever it keeps
locally; when everything is shared, one client stands for all) on the whole validation and test splits and reports correct predictions and loss per
true class. From those the server computes, without seeing any example:

- `acc`, `loss`: a client model's accuracy and loss on the whole split, averaged over clients
  (under FedAvg and FedProx every client holds the same model, so this is the global model's);
- `acc/client_mean`, `acc/client_worst`: each client's accuracy on its own label distribution
  (per-class accuracy weighted by the client's share of each class in its training data), the
  mean and the minimum over clients: what personalisation buys under label skew.
"""
from __future__ import annotations

import torch

from psx.federated.client import PARTITION_KEY


def class_totals(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(labels.cpu(), minlength=classes).double()


def split_metrics(correct: torch.Tensor, loss: torch.Tensor, totals: torch.Tensor,
                  label_shares: torch.Tensor) -> dict[str, float]:
    """correct, loss: (clients, classes) sums; totals: (classes,) examples per class;
    label_shares: (clients, classes), rows summing to 1."""
    n = totals.sum()
    plain_acc = correct.sum(1) / n
    per_class = correct / totals.clamp_min(1)
    own_acc = (per_class * label_shares).sum(1)
    return {
        "acc": plain_acc.mean().item(),
        "loss": (loss.sum(1) / n).mean().item(),
        "acc/client_mean": own_acc.mean().item(),
        "acc/client_worst": own_acc.min().item(),
    }


def round_metrics(replies: list, label_shares: torch.Tensor, val_totals: torch.Tensor,
                  test_totals: torch.Tensor) -> dict[str, float]:
    """{"val/acc": ..., "test/acc/client_worst": ...} from evaluation replies sorted by partition."""
    records = [next(iter(m.content.metric_records.values())) for m in replies]
    # One reply for several clients: they share one model (FedAvg), so its counts are everyone's.
    clients = len(label_shares) if len(records) == 1 else len(records)
    shares = label_shares if len(records) == 1 else label_shares[[int(r[PARTITION_KEY]) for r in records]]
    row: dict[str, float] = {}
    for split, totals in (("val", val_totals), ("test", test_totals)):
        correct = torch.tensor([list(r[f"{split}-correct"]) for r in records], dtype=torch.float64).expand(clients, -1)
        loss = torch.tensor([list(r[f"{split}-loss"]) for r in records], dtype=torch.float64).expand(clients, -1)
        row.update({f"{split}/{k}": v for k, v in split_metrics(correct, loss, totals, shares).items()})
    return row
