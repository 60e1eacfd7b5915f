"""Adapters: one frozen shared backbone, small per-task modules.

- BottleneckAdapter (Houlsby et al. 2019): down-project to `size`, nonlinearity, up-project, add to
  the input. The up-projection starts at zero, so a fresh adapter is the identity.
- LoRA (Hu et al. 2021): a frozen weight W plus a trained low-rank delta, W + (alpha / r) B A, with A
  random and B zero, so a fresh LoRA changes nothing. LoRALinear is an nn.Linear (same `weight` and
  `bias` names, so a backbone checkpoint still loads by name) plus `lora`; CausalSelfAttention takes
  one on its packed in-projection (`in_proj_lora`).

add_lora / add_adapters put them into a model, and freeze_all_but leaves only them (and any prefixes
named, such as a task head) trainable: the parameters a task then adds are exactly the trainable ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from psx.errors import PsxError
from psx.models.attention import CausalSelfAttention
from psx.models.probe import run_with_hooks


class LoRA(nn.Module):
    """x -> (alpha / rank) B A x, the low-rank update of an (out, in) weight."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise PsxError(f"LoRA rank must be at least 1 (got {rank})")
        self.rank, self.alpha = rank, float(rank if alpha is None else alpha)
        self.scale = self.alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear draws a weight (and the LoRA code does)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.A), self.B) * self.scale

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRALinear(nn.Linear):
    """A Linear with a LoRA update; from_linear keeps the Linear's own weight and bias Parameters."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha: float | None = None) -> "LoRALinear":
        # Built on the meta device (no memory, no random draws), then given the Linear's Parameters.
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.lora = LoRA(linear.in_features, linear.out_features, rank, alpha).to(linear.weight.device, linear.weight.dtype)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora(x)


class BottleneckAdapter(nn.Module):
    """x + up(relu(down(x))) over the features at `channel_dim` (-1 for (..., features) activations,
    1 for (B, C, H, W) feature maps)."""

    def __init__(self, features: int, size: int, channel_dim: int = -1):
        super().__init__()
        if size < 1:
            raise PsxError(f"adapter size must be at least 1 (got {size})")
        self.channel_dim = channel_dim
        self.down = nn.Linear(features, size)
        self.up = nn.Linear(size, features)
        nn.init.zeros_(self.up.weight)  # a fresh adapter is the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moved = x.movedim(self.channel_dim, -1)  # a view; channels-last maps are then contiguous
        return x + self.up(F.relu(self.down(moved))).movedim(-1, self.channel_dim)


ADAPTER_MODULES = (LoRA, BottleneckAdapter)


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def add_lora(model: nn.Module, targets: list[str], rank: int, alpha: float | None = None) -> list[str]:
    """Give every nn.Linear and CausalSelfAttention under the target names a LoRA update, in place
    (those that have one already are left as they are); returns the names of the modules that got one."""
    chosen = [(name, module) for name, module in model.named_modules()
              if _under(name, targets) and isinstance(module, (nn.Linear, CausalSelfAttention))
              and not isinstance(module, LoRALinear) and getattr(module, "in_proj_lora", None) is None]
    if not chosen:
        raise PsxError(f"LoRA targets {targets} name no Linear or attention layer of the model")
    for name, module in chosen:
        if isinstance(module, CausalSelfAttention):
            rows, hidden = module.in_proj_weight.shape
            module.in_proj_lora = LoRA(hidden, rows, rank, alpha).to(module.in_proj_weight.device, module.in_proj_weight.dtype)
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear.from_linear(module, rank, alpha))
    return [name for name, _ in chosen]


def _output_features(model: nn.Module, blocks: list[str], example: torch.Tensor, channel_dim: int) -> dict[str, int]:
    sizes: dict[str, int] = {}

    def record(name):
        def hook(_, __, output):  # returns None: the output stays as it is
            if not isinstance(output, torch.Tensor):
                raise PsxError(f"adapter after {name!r}: its output is a {type(output).__name__}, not a tensor")
            sizes[name] = output.shape[channel_dim]
        return hook

    run_with_hooks(model, example, [(model.get_submodule(name), record(name)) for name in blocks])
    return sizes


def _apply_adapter(block: nn.Module, _args, output: torch.Tensor) -> torch.Tensor:
    return block.adapter(output)


def add_adapters(model: nn.Module, blocks: list[str], size: int, example: torch.Tensor, channel_dim: int = -1) -> list[str]:
    """A BottleneckAdapter after each named block, in place: the block gets an `adapter` child (its
    own parameters keep their names) and a forward hook that passes its output through it.
    `example` is a batch of the model's input, used to find each block's width."""
    modules = dict(model.named_modules())
    missing = [name for name in blocks if name not in modules]
    if missing or not blocks:
        raise PsxError(f"adapters: no block of the model is named {missing or blocks}")
    taken = [name for name in blocks if hasattr(modules[name], "adapter")]
    if taken:
        raise PsxError(f"adapters: {taken} already have one")
    features = _output_features(model, blocks, example, channel_dim)
    for name in blocks:
        block = modules[name]
        like = next(block.parameters(), example)
        block.adapter = BottleneckAdapter(features[name], size, channel_dim).to(example.device, like.dtype)
        block.register_forward_hook(_apply_adapter)
    return list(blocks)


def adapter_parameter_names(model: nn.Module) -> list[str]:
    return [f"{name}.{pname}" if name else pname for name, module in model.named_modules()
            if isinstance(module, ADAPTER_MODULES) for pname, _ in module.named_parameters()]


def freeze_all_but(model: nn.Module, trainable: list[str] = ()) -> list[str]:
    """Freeze every parameter except the adapters' and those under the `trainable` prefixes (a task
    head, say); returns the names left trainable."""
    keep = set(adapter_parameter_names(model))
    unknown = [p for p in trainable if not any(_under(name, [p]) for name, _ in model.named_parameters())]
    if unknown:
        raise PsxError(f"trainable prefixes {unknown} name no parameters of the model")
    left = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep or _under(name, trainable))
        if parameter.requires_grad:
            left.append(name)
    return left
