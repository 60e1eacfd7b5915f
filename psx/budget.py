"""How long a run trains: a number of epochs, or a number of optimizer steps.

With `trainer.budget=epochs` a run makes `trainer.epochs` passes over its training data and is
evaluated after each. A data-size sweep then gives its smallest sizes very few optimizer steps
(50 examples at batch 32: 2 steps an epoch), so its arms are compared before they have trained.

With `trainer.budget=steps` every run takes `trainer.steps` optimizer steps, whatever the size of
its training set. Training runs in rounds of `trainer.eval_every` steps (null: one pass over the
training data), each followed by an evaluation: a round is what an epoch is under the epoch budget
(one metrics.csv row, one checkpoint, what trainer.patience counts). The batches run on across
rounds, a new seeded shuffle at the end of each pass; the last round may be shorter. The learning
rate schedule follows the steps: cosine anneals over `trainer.steps` and `trainer.step_size` counts
optimizer steps, both advanced after every optimizer step (the plateau rule still acts on each
evaluation). With a fixed eval_every, every training-set size gets the same steps, the same
schedule and the same number of evaluations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Budget:
    kind: str  # "epochs" or "steps"
    rounds: int  # evaluations: epochs under an epoch budget
    round_steps: int | None  # optimizer steps per round; None: one whole pass (epoch budget)
    steps: int | None  # total optimizer steps (step budget)

    def steps_in_round(self, round_number: int) -> int | None:
        """Optimizer steps of this round (1-based); None: until the pass over the data ends."""
        if self.steps is None:
            return None
        return min(self.round_steps, self.steps - (round_number - 1) * self.round_steps)

    @property
    def per_step_schedule(self) -> bool:
        return self.kind == "steps"


def budget_of(cfg: DictConfig, steps_per_epoch: int) -> Budget:
    """The budget trainer config `cfg` gives a run whose training data is `steps_per_epoch` batches."""
    if cfg.get("budget", "epochs") == "epochs":
        return Budget("epochs", cfg.epochs, None, None)
    round_steps = cfg.get("eval_every") or steps_per_epoch
    return Budget("steps", math.ceil(cfg.steps / round_steps), round_steps, cfg.steps)


def schedule_length(cfg: DictConfig) -> int:
    """What the cosine schedule anneals over: epochs, or optimizer steps under a step budget."""
    return cfg.steps if cfg.get("budget", "epochs") == "steps" else cfg.epochs
