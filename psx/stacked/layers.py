"""A model template whose forward runs under torch.func.vmap over a stack of seeds' weights.

Most layers (Linear, Conv2d, pooling, activations) have vmap batching rules in PyTorch: a vmapped
Linear is one batched matmul, a vmapped Conv2d one grouped convolution. psx's LocallyConnected2d is
a custom autograd.Function written in the pre-functorch style (forward(ctx, ...)), which vmap
refuses. Its forward is redirected here, in the template only, to a Function whose vmap rule runs
the layer once per seed with that seed's weights, outside vmap and under ordinary autograd: each
seed's forward and backward are the layer's own, bit for bit, and the layer itself is unchanged.
The layer is already one batched matmul over its output positions, so stacking it further would
gain little.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from psx.models.locally_connected import LocallyConnected2d

# Layers vmap cannot batch; they run once per seed inside the stacked forward.
RUN_PER_SEED = (LocallyConnected2d,)


class _PerSeed(torch.autograd.Function):
    """apply(module, names, x, *tensors): module(x) with its parameters `names` set to `tensors`.
    Only meant to run under vmap, whose rule below loops over the stack."""

    @staticmethod
    def forward(module, names, x, *tensors):
        return functional_call(module, dict(zip(names, tensors)), (x,))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("psx.stacked: a per-seed layer ran outside vmap; it has no backward there")

    @staticmethod
    def vmap(info, in_dims, module, names, x, *tensors):
        # unbind, not select per seed: its backward stacks the seeds' gradients once, where each
        # select's backward would write one seed's slice into a zeroed tensor of the whole stack.
        seeds = info.batch_size
        x_seeds = [x] * seeds if in_dims[2] is None else x.unbind(in_dims[2])
        weights = [[t] * seeds if d is None else t.unbind(d) for t, d in zip(tensors, in_dims[3:])]
        outputs = []
        for seed in range(seeds):
            # Back outside vmap: the layer's own autograd.Function records its own backward.
            outputs.append(functional_call(module, dict(zip(names, [w[seed] for w in weights])), (x_seeds[seed],)))
        return _stack_keeping_layout(outputs), 0


def _stack_keeping_layout(outputs: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, except that channels-last outputs stay channels-last within each seed's slice
    (torch.stack would make them NCHW, in which the pooling after them and the next
    LocallyConnected2d are slower)."""
    if outputs[0].dim() == 4 and all(o.is_contiguous(memory_format=torch.channels_last) for o in outputs):
        return torch.stack([o.permute(0, 2, 3, 1) for o in outputs]).permute(0, 1, 4, 2, 3)
    return torch.stack(outputs)


def _per_seed_forward(plain: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    names = [name for name, _ in plain.named_parameters(recurse=False)]
    tensors = [getattr(module, name) for name in names]  # the stacked-and-sliced weights functional_call set
    return _PerSeed.apply(plain, names, x, *tensors)


def stackable_template(model: nn.Module) -> nn.Module:
    """A parameter-free (meta device) copy of `model` to call with torch.func.functional_call under
    vmap; its LocallyConnected2d layers go through the per-seed rule above."""
    template = copy.deepcopy(model).to("meta")
    for module in template.modules():
        if isinstance(module, RUN_PER_SEED):
            plain = copy.deepcopy(module)  # keeps the class's forward, for the per-seed calls
            module.forward = functools.partial(_per_seed_forward, plain, module)
    return template


class MemoryFormatAsIs(TorchFunctionMode):
    """Inside it, x.contiguous(memory_format=...) is x.contiguous(): vmap cannot yet make a batched
    tensor channels-last (PyTorch: "NYI: querying is_contiguous inside of vmap"), and a memory
    format is a layout for speed, never a change of values. The CNNs ask for channels-last."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.contiguous:
            return args[0].contiguous()  # whatever memory_format was asked, positionally or by name
        return func(*args, **(kwargs or {}))
