"""Dynamic sharing: untie a trained convolution into a layer with one filter per position.

Right after untying, the new layer computes exactly what the conv did (its filters copied to every
position), so training goes on from the same function, now without sharing. The optimizer has to be
rebuilt afterwards: the untied layer's parameters are new tensors.
"""
from __future__ import annotations

import torch
from torch import nn

from psx.models.locally_connected import LocallyConnected2d
from psx.models.probe import run_with_hooks
from psx.models.soft_shared import SoftSharedConv2d

UNTIE_INTO = ("locally_connected", "soft")


def _check_untieable(conv: nn.Conv2d) -> tuple[int, int, int]:
    """(kernel, stride, padding) of a conv that a LocallyConnected2d can reproduce."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    square = k[0] == k[1] and s[0] == s[1] and not isinstance(p, str) and p[0] == p[1]
    if not square or conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"cannot untie {conv}: only square, ungrouped, undilated, zero-padded convs")
    return k[0], s[0], p[0]


def untie(conv: nn.Conv2d, input_size: tuple[int, int], into: str = "locally_connected") -> nn.Module:
    """A LocallyConnected2d (or, with into="soft", a SoftSharedConv2d with zero offsets) for the conv's
    input size that computes what the conv computes, on the conv's device and dtype."""
    if into not in UNTIE_INTO:
        raise ValueError(f"untie into {into!r}: not one of {UNTIE_INTO}")
    k, s, p = _check_untieable(conv)
    bias = conv.bias is not None
    like = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    if into == "soft":
        layer = SoftSharedConv2d(conv.in_channels, conv.out_channels, input_size, k, s, p, bias).to(**like)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if bias:
                layer.bias.copy_(conv.bias)
        return layer
    layer = LocallyConnected2d(conv.in_channels, conv.out_channels, input_size, k, s, p, bias).to(**like)
    accept_conv_state(layer)
    if bias:
        return layer.copy_from_conv(conv)
    with torch.no_grad():  # copy_from_conv copies a bias too; without one, the filters alone
        layer.as_conv_filters(layer.weight).copy_(conv.weight.unsqueeze(0).expand(len(layer.weight), *conv.weight.shape))
    return layer


def conv_input_sizes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """The (height, width) each Conv2d of the model sees, found by running the example through it."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(_, args):  # returns None: a pre-hook's return value would replace the conv's input
            sizes.setdefault(name, tuple(args[0].shape[-2:]))
        return hook

    convs = [(module, record(name)) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    run_with_hooks(model, example, convs, pre=True)
    return sizes


def untie_convs(model: nn.Module, example: torch.Tensor, names: list[str] | None = None,
                into: str = "locally_connected") -> list[str]:
    """Replace the model's Conv2d layers (all, or those named) by untied layers in place; returns the
    names replaced. `example` is a batch of the model's input, used to learn each conv's input size."""
    sizes = conv_input_sizes(model, example)
    chosen = list(sizes) if names is None else names
    unknown = [name for name in chosen if name not in sizes]
    if unknown:
        raise ValueError(f"untie_convs: no Conv2d used by the model under the names {unknown}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, untie(getattr(parent, child), sizes[name], into))
    return chosen


def accept_conv_state(layer: LocallyConnected2d) -> LocallyConnected2d:
    """Let an untied layer load the state of the conv it replaced (its filters at every position): the
    weights a run kept from before it untied (its best epoch, say) load into the untied model."""
    def convert(module, state, prefix, *args):
        weight = state.get(prefix + "weight")
        if weight is None or weight.dim() != 4:
            return
        state[prefix + "weight"] = weight.permute(2, 3, 1, 0).reshape(1, -1, module.out_channels).expand_as(module.weight)
        bias = state.get(prefix + "bias")
        if bias is not None and module.bias is not None:
            state[prefix + "bias"] = bias.view(-1, 1, 1).expand_as(module.bias)

    layer.register_load_state_dict_pre_hook(convert)
    return layer
