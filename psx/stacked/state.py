"""Per-seed bookkeeping of a stacked run: each seed's history, best epoch and stop, its slice of the
stacked weights, and gradient clipping by each seed's own norm."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from psx.errors import PsxError


@dataclass
class SeedRecord:
    """What psx.trainer.Trainer keeps in its loop state, for one seed of the stack."""

    seed: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0
    active: bool = True
    stopped_early: bool = False
    error: PsxError | None = None

    def __post_init__(self):
        # The same streams as a single run of this seed: batch order, then augmentation draws.
        self.shuffler = torch.Generator().manual_seed(self.seed)
        self.augmenter = torch.Generator().manual_seed(self.seed + 1)

    def improve(self, epoch: int, val: dict[str, float], state: dict[str, torch.Tensor]) -> None:
        self.best_epoch, self.best_val, self.best_state, self.stale = epoch, val, state, 0

    def end(self, error: PsxError | None, stopped_early: bool = False) -> None:
        self.active, self.error, self.stopped_early = False, error, stopped_early


def seed_state(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Seed `index`'s weights as a state dict of its own model (copies, not views of the stack)."""
    return {name: t[index].detach().clone() for name, t in {**params, **buffers}.items()}


def per_seed_rows(epoch: int, train_losses: list[float], val: list[dict[str, float]], common: dict, task) -> list[dict]:
    """Each seed's metrics row, with the keys and order of a single run's row."""
    rows = []
    for loss, seed_val in zip(train_losses, val):
        row = {"epoch": epoch, "step": common["step"], "train/loss": loss, **task.train_metrics(loss)}
        row.update({f"val/{k}": v for k, v in seed_val.items()})
        row.update({k: v for k, v in common.items() if k != "step"})
        rows.append(row)
    return rows


@torch.no_grad()
def clip_per_seed(stacked: list[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ for every seed at once: each seed's gradients (slice k of
    every stacked tensor) scaled by min(1, max_norm / (their global L2 norm + 1e-6))."""
    grads = [p.grad for p in stacked if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads], dim=1)  # (seeds, tensors)
    scale = (max_norm / (norms.norm(dim=1) + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
