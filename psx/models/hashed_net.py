"""HashedNets' networks (Chen et al. 2015): an MLP or a small CNN built from hashed layers, the same
network dense, or dense with its widths scaled to the hashed one's real parameter count."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.families.hashed import HashedConfig
from psx.models.hashed import HashedConv2d, HashedLinear, bucket_count


def layer_seed(cfg: HashedConfig, index: int) -> int:
    return cfg.hash_seed * 1000 + index  # each layer its own pattern, or same-shaped layers would share one


def features(cfg: HashedConfig, spec: DataSpec, hashed: bool) -> tuple[list[nn.Module], int]:
    """The cnn base's conv stack (nothing for the mlp base) and the width it hands the head."""
    if cfg.base == "mlp":
        return [nn.Flatten()], math.prod(spec.input_shape)
    channels, height, width = spec.input_shape
    k, layers = cfg.kernel_size, []
    for index, out_channels in enumerate(cfg.channels):
        conv = (HashedConv2d(channels, out_channels, k, 1, k // 2, cfg.compression, layer_seed(cfg, index))
                if hashed else nn.Conv2d(channels, out_channels, k, padding=k // 2))
        layers += [conv, nn.ReLU()]
        if cfg.pool > 1:
            if min(height, width) < cfg.pool:
                raise PsxError(f"model {cfg.name}: conv layer {index + 1} gets a {height}x{width} map, smaller "
                               f"than pool={cfg.pool}; use fewer layers or model.pool=1")
            layers.append(nn.MaxPool2d(cfg.pool))
            height, width = height // cfg.pool, width // cfg.pool
        channels = out_channels
    return layers + [nn.Flatten()], channels * height * width


def network(cfg: HashedConfig, spec: DataSpec, hashed: bool) -> nn.Sequential:
    layers, width = features(cfg, spec, hashed)
    offset = len(cfg.channels) if cfg.base == "cnn" else 0
    for index, out in enumerate([*cfg.hidden, spec.num_classes]):
        seed = layer_seed(cfg, offset + index)
        layers.append(HashedLinear(width, out, cfg.compression, seed) if hashed else nn.Linear(width, out))
        if index < len(cfg.hidden):
            layers += [nn.ReLU()] + ([nn.Dropout(cfg.dropout)] if cfg.dropout > 0 else [])
        width = out
    return nn.Sequential(*layers)


def hashed_real_count(cfg: HashedConfig, spec: DataSpec) -> int:
    """The hashed network's real parameters (buckets + biases), from the dense network's shapes."""
    with torch.device("meta"):
        dense = network(cfg, spec, hashed=False)
    return sum(bucket_count(m.weight.numel(), cfg.compression) + m.bias.numel()
               for m in dense.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def scaled(cfg: HashedConfig, scale: float) -> HashedConfig:
    return replace(cfg, hidden=[max(1, round(w * scale)) for w in cfg.hidden],
                   channels=[max(1, round(c * scale)) for c in cfg.channels])


def dense_count(cfg: HashedConfig, spec: DataSpec) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in network(cfg, spec, hashed=False).parameters())


def equal_size_config(cfg: HashedConfig, spec: DataSpec) -> HashedConfig:
    """The widths, scaled by one factor, whose dense network has the real parameter count nearest the
    hashed network's (the count grows with the factor, so bisection finds it)."""
    target, low, high = hashed_real_count(cfg, spec), 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if dense_count(scaled(cfg, middle), spec) <= target:
            low = middle
        else:
            high = middle
    return min((scaled(cfg, low), scaled(cfg, high)), key=lambda c: abs(dense_count(c, spec) - target))


class HashedNet(nn.Module):
    def __init__(self, cfg: HashedConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != "images":
            raise PsxError(f"model {cfg.name} needs images; {spec.name} holds {spec.kind}")
        if cfg.arm == "equal":
            cfg = equal_size_config(cfg, spec)
        self.widths = {"channels": list(cfg.channels) if cfg.base == "cnn" else [], "hidden": list(cfg.hidden)}
        self.net = network(cfg, spec, hashed=cfg.arm == "hashed")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and isinstance(self.net[0], (nn.Conv2d, HashedConv2d)):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def parameter_reuse(self) -> dict[str, float]:
        """A hashed layer's buckets stand for its virtual weights (fractional reuse, virtual / buckets)."""
        return {f"net.{name}.{key}": times for name, module in self.net.named_children()
                if isinstance(module, (HashedLinear, HashedConv2d)) for key, times in module.parameter_reuse().items()}

    def extra_repr(self) -> str:
        return f"widths={self.widths}"
