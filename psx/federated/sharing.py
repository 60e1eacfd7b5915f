"""Which of a model's tensors the clients share through the server, and what sending them costs."""
from __future__ import annotations

from torch import nn

from psx.errors import PsxError


def shared_keys(model: nn.Module, shared: str, local_layers: list[str]) -> list[str]:
    """The state-dict entries the server averages (in the model's order): all of them (FedAvg,
    FedProx), all but those under `local_layers` (FedPer: the head stays on its client), or none."""
    keys = list(model.state_dict().keys())
    if shared == "all":
        return keys
    if shared == "none":
        return []
    def is_local(key: str) -> bool:
        return any(key == prefix or key.startswith(prefix + ".") for prefix in local_layers)

    unmatched = [prefix for prefix in local_layers if not any(is_local(k) and k.startswith(prefix) for k in keys)]
    if unmatched:
        modules = sorted({k.split(".")[0] for k in keys})
        raise PsxError(f"federated.local_layers names no part of the model: {', '.join(unmatched)} "
                       f"(its top-level modules: {', '.join(modules)})")
    trunk = [k for k in keys if not is_local(k)]
    if not trunk:
        raise PsxError("federated.local_layers covers the whole model, so nothing is shared; use federated=local")
    return trunk


def shared_parameter_count(model: nn.Module, keys: list[str]) -> int:
    """params/shared_across_clients: trainable numbers in the shared tensors."""
    wanted = set(keys)
    return sum(p.numel() for name, p in model.named_parameters() if name in wanted)


def payload_bytes(arrays) -> int:
    """Bytes of tensor data in a Flower ArrayRecord: what one message carries for the model."""
    return sum(len(array.data) for array in arrays.values())
