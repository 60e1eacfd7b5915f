"""Multi-task family on two-digit images: the CNN family's network with a head per task.
Arms: `shared` (one conv trunk serves every task), `soft` (a whole network per task, the trunks'
matching tensors pulled together by `soft.strength * sum ||a - b||^2` over task pairs, as in
Duong et al. 2015) and `separate` (a whole network per task). The convolutions are ordinary Conv2d
in every arm: sharing here means across tasks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from psx.errors import PsxError
from psx.models.families.cnn import CNNConfig
from psx.models.families.cnn import check as check_cnn
from psx.models.family import Family, ModelConfig


@dataclass
class MTLConfig(CNNConfig):
    family: str = "mtl"
    arm: str = "shared"
    # The loss is the weighted sum over tasks, e.g. {left: 1.0, right: 0.5}; None or a task not listed: 1.0.
    # Typed Any (checked below): OmegaConf cannot merge an override's mapping into a typed None.
    task_weights: Optional[Any] = None


def needs_tasks(config: ModelConfig, spec) -> str:
    return f"{config.name} predicts several tasks and {spec.name} has one label; use dataset=multi_digits or multi_mnist"


def check(config: MTLConfig) -> None:
    check_cnn(config)
    if config.adapter != "none":
        raise PsxError("model.adapter adapts a backbone to one task per run; the mtl family trains its tasks together")
    if config.untie_at is not None:
        raise PsxError("model.untie_at unties a CNN's convolutions over space; the mtl family shares across tasks")
    weights: Optional[Dict[str, Any]] = config.task_weights
    if weights is None:
        return
    if not isinstance(weights, dict) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights.values()):
        raise PsxError(f"model.task_weights must map task names to weights >= 0, e.g. {{left: 1.0, right: 0.5}}; got {weights}")


FAMILY = Family(
    name="mtl",
    config=MTLConfig,
    arms=("shared", "soft", "separate"),
    reference_arm="separate",
    accepts=("multitask",),
    network="psx.models.multitask:MultiTaskCNN",
    check=check,
    mismatch=needs_tasks,
)
