"""Split a training set among federated clients: IID, Dirichlet label skew, or label shards.

Every scheme is seeded (one torch.Generator) and returns one index tensor per client, disjoint,
covering every example once, each sorted so a client's data does not depend on how the
partition was drawn. The schemes are the usual ones of the federated-learning literature:

- iid: a random permutation cut into `clients` parts whose sizes differ by at most one.
- dirichlet: for each class, the shares of the clients are drawn from Dirichlet(alpha)
  (Hsu et al. 2019, "Measuring the effects of non-identical data distribution"); a small alpha
  gives each client few classes, a large one approaches IID. Clients left empty by the draw are
  redrawn (a bounded number of times) so every client holds at least `min_size` examples.
- shards: examples sorted by label and cut into `2 * clients` shards, two per client
  (McMahan et al. 2017, the pathological non-IID split).
"""
from __future__ import annotations

import torch

from psx.errors import PsxError

SCHEMES = ("iid", "dirichlet", "shards")
_REDRAWS = 100


def partition(labels: torch.Tensor, clients: int, scheme: str, seed: int, alpha: float = 1.0,
              min_size: int = 1) -> list[torch.Tensor]:
    """Indices into `labels` (one class index per example) for each of `clients` clients."""
    labels = labels.cpu()
    if clients < 1:
        raise PsxError(f"federated.clients must be >= 1, got {clients}")
    if clients * min_size > len(labels):
        raise PsxError(f"federated.clients={clients} needs at least {clients * min_size} training examples, "
                       f"the data has {len(labels)}; use fewer clients or more data")
    generator = torch.Generator().manual_seed(seed)
    if scheme == "iid":
        parts = list(torch.randperm(len(labels), generator=generator).tensor_split(clients))
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, clients, alpha, generator, min_size)
    elif scheme == "shards":
        parts = _shards(labels, clients, generator)
    else:
        raise PsxError(f"unknown federated.partition {scheme!r} ({', '.join(SCHEMES)})")
    return [part.sort().values for part in parts]


def _dirichlet(labels: torch.Tensor, clients: int, alpha: float, generator: torch.Generator,
               min_size: int) -> list[torch.Tensor]:
    if alpha <= 0:
        raise PsxError(f"federated.alpha must be > 0, got {alpha}")
    concentration = torch.full((clients,), float(alpha), dtype=torch.float64)
    for _ in range(_REDRAWS):
        parts: list[list[torch.Tensor]] = [[] for _ in range(clients)]
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            shares = _sample_dirichlet(concentration, generator)
            # Cumulative shares -> cut points, so the class's examples are split exactly once.
            cuts = (shares.cumsum(0) * len(members)).round().long()[:-1].tolist()
            for client, piece in enumerate(members.tensor_split(cuts)):
                parts[client].append(piece)
        merged = [torch.cat(pieces) for pieces in parts]
        if min(len(part) for part in merged) >= min_size:
            return merged
    raise PsxError(f"federated.alpha={alpha} left a client with fewer than {min_size} examples in {_REDRAWS} "
                   f"draws; use a larger alpha or fewer clients")


def _sample_dirichlet(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dirichlet draw from normalised Gamma(alpha, 1) draws, with an explicit generator (torch's
    distributions do not take one). Gamma by Marsaglia-Tsang, boosted for alpha < 1."""
    return _normalise(_gamma(concentration, generator))


def _normalise(values: torch.Tensor) -> torch.Tensor:
    total = values.sum()
    if total <= 0:  # every share underflowed (tiny alpha): give the class to one client
        values = torch.zeros_like(values)
        values[0] = 1.0
        return values
    return values / total


def _gamma(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    boost = shape < 1
    d = torch.where(boost, shape + 1, shape) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = torch.ones_like(shape, dtype=torch.bool)
    while todo.any():
        z = torch.randn(shape.shape, generator=generator, dtype=shape.dtype)
        u = torch.rand(shape.shape, generator=generator, dtype=shape.dtype)
        v = (1 + c * z) ** 3
        accept = todo & (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out = torch.where(accept, d * v, out)
        todo = todo & ~accept
    u = torch.rand(shape.shape, generator=generator, dtype=shape.dtype)
    return torch.where(boost, out * u ** (1.0 / shape), out)


def _shards(labels: torch.Tensor, clients: int, generator: torch.Generator) -> list[torch.Tensor]:
    # Sort by label (ties broken by a seeded shuffle), cut into 2 shards per client, deal them out.
    order = torch.randperm(len(labels), generator=generator)
    order = order[labels[order].argsort(stable=True)]
    shards = order.tensor_split(2 * clients)
    dealt = torch.randperm(2 * clients, generator=generator).view(clients, 2)
    return [torch.cat([shards[i] for i in pair.tolist()]) for pair in dealt]


def label_distribution(labels: torch.Tensor, parts: list[torch.Tensor], classes: int) -> torch.Tensor:
    """(clients, classes): each client's share of its examples in each class (rows sum to 1)."""
    counts = torch.stack([torch.bincount(labels.cpu()[part], minlength=classes) for part in parts]).double()
    return counts / counts.sum(1, keepdim=True).clamp_min(1)
