"""The `federated` config group: its schema and the checks that need no data and no Flower.

Imported by psx.config's validation, so it must stay light (no torch, no flwr).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum
from typing import List, Optional

from omegaconf import MISSING, DictConfig

from psx.errors import PsxError

CENTRALISED = "none"  # federated=none: the ordinary, centralised run (the reference)
PARTITIONS = ("iid", "dirichlet", "shards")
INSTALL_HINT = 'pip install -e ".[federated]"'


class Shared(Enum):
    all = "all"      # FedAvg, FedProx: every parameter is averaged on the server
    trunk = "trunk"  # FedPer: everything but `local_layers` is averaged; those stay on their client
    none = "none"    # local only: nothing leaves a client


@dataclass
class FederatedSchema:
    name: str = MISSING               # none | fedavg | fedprox | fedper | local
    shared: Shared = MISSING
    clients: int = MISSING
    rounds: int = MISSING
    local_epochs: int = MISSING
    fraction: float = MISSING         # share of the clients that train in each round
    partition: str = MISSING          # iid | dirichlet | shards
    alpha: float = MISSING            # Dirichlet concentration (label skew; small = skewed)
    partition_seed: int = MISSING
    proximal_mu: float = MISSING      # FedProx: weight of (mu/2)||w - w_global||^2
    local_layers: List[str] = MISSING  # shared=trunk: name prefixes of the parameters kept local
    client_cpus: float = MISSING      # Ray resources per simulated client
    timeout_s: Optional[float] = MISSING  # how long the server waits for a round's replies


def is_federated(cfg: DictConfig) -> bool:
    """True for a run that trains on Flower instead of psx's trainer (configs saved before the
    federated group existed have no `federated` key: centralised)."""
    federated = cfg.get("federated")
    return federated is not None and federated.get("name", CENTRALISED) != CENTRALISED


def check_federated(federated: DictConfig, train_size: Optional[int], dataset_kind: Optional[str] = None) -> None:
    """One-line errors for settings that cannot run, before any data loads or Flower starts."""
    if federated.name == CENTRALISED:
        return
    for key in ("clients", "rounds", "local_epochs"):
        if federated[key] < 1:
            raise PsxError(f"federated.{key} must be >= 1, got {federated[key]}")
    if not 0 < federated.fraction <= 1:
        raise PsxError(f"federated.fraction must be in (0, 1], got {federated.fraction}")
    if federated.partition not in PARTITIONS:
        raise PsxError(f"unknown federated.partition {federated.partition!r} ({', '.join(PARTITIONS)})")
    if federated.alpha <= 0:
        raise PsxError(f"federated.alpha must be > 0, got {federated.alpha}")
    if federated.proximal_mu < 0:
        raise PsxError(f"federated.proximal_mu must be >= 0, got {federated.proximal_mu}")
    if federated.client_cpus <= 0:
        raise PsxError(f"federated.client_cpus must be > 0, got {federated.client_cpus}")
    if federated.shared == "trunk" and not federated.local_layers:
        raise PsxError("federated.shared=trunk needs federated.local_layers (the parameters kept on each client)")
    if train_size is not None and federated.clients > train_size:
        raise PsxError(f"federated.clients={federated.clients} is more than the {train_size} training examples "
                       f"(dataset.train_size); use fewer clients or more data")
    if dataset_kind is not None and dataset_kind != "images":
        raise PsxError(f"federated learning trains image classifiers; this data set holds {dataset_kind}")
    require_flower(federated.name)


def require_flower(arm: str) -> None:
    missing = [module for module in ("flwr", "ray") if importlib.util.find_spec(module) is None]
    if missing:
        raise PsxError(f"federated={arm} needs Flower's simulation engine ({' and '.join(missing)} not installed): "
                       f"{INSTALL_HINT}")
