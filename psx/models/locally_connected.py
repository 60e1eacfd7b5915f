"""LocallyConnected2d: a convolution without weight sharing.

Every output position has its own filter bank and bias. The weight is laid out as
(positions, k * k * in_channels, out_channels): at each position a filter matrix with the patch
ordered (row, column, channel).

The computation is one batched matmul over positions, patches(L, B, K) @ weight(L, K, O) ->
out(L, B, O). Activations come in and go out channels-last (the layout PyTorch's CPU pooling and
ReLU are fastest on, and that a CNN built here runs in). The input is copied once to a padded
(H, W, C, B) array, batch innermost, in which a patch row (k columns x C channels x B) is one
contiguous run of k*C*B values, so gathering patches is a few long copies (the channels-last input
gives runs of only k*C: 9 values for RGB). Work goes a block of output rows at a time: gather that
block's patches (l, K, B), one bmm, and move its (l, B, O) output into the channels-last result,
plus the bias, while it is still in cache. Only the padded input is kept for backward, which
gathers each block's patches again. No intermediate is larger than the unfolded input (unlike the
batch x out x in x H x W x k^2 broadcast of common snippets), and the usual unfold + permute + bmm
layout, which makes CPU bmm copy each of the L slices and spends its time in im2col/col2im, is
avoided (see scripts/bench_lc.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from psx.models.eager import run_eagerly_under_compile


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


def set_geometry(layer: nn.Module, in_channels: int, out_channels: int, input_size: tuple[int, int],
                 kernel_size: int, stride: int, padding: int) -> int:
    """The shape attributes every per-position layer keeps (this one and the soft-shared one);
    returns the number of output positions."""
    layer.in_channels, layer.out_channels = in_channels, out_channels
    layer.kernel_size, layer.stride, layer.padding = kernel_size, stride, padding
    layer.input_size = tuple(input_size)
    layer.output_size = tuple(conv_output_size(s, kernel_size, stride, padding) for s in input_size)
    if min(layer.output_size) < 1:
        raise ValueError(f"kernel {kernel_size} with padding {padding} does not fit input {input_size}")
    return layer.output_size[0] * layer.output_size[1]


# Patches are gathered, and outputs moved to channels-last, a block of output rows at a time, about
# this many bytes per block: blocks this size stay in cache between the gather, the matmul and the
# move, larger ones make fewer, larger matmuls at the input layers (the size was chosen with
# scripts/bench_lc.py; README, Speed), and they are reused from the heap, where one buffer for all
# rows (often over glibc's 32 MB mmap threshold) is mapped afresh and page-faulted in on every call.
BLOCK_BYTES = 4 * 2**20


def _row_blocks(batch: int, values_per_position: int, itemsize: int, out_h: int, out_w: int):
    """(first row, row count) of each block of output rows, at about BLOCK_BYTES of
    values_per_position (a patch, or an output) per position and batch item."""
    row_bytes = out_w * batch * values_per_position * itemsize
    rows = max(1, min(out_h, BLOCK_BYTES // max(row_bytes, 1)))
    return [(first, min(rows, out_h - first)) for first in range(0, out_h, rows)]


def _to_hwcb(x: torch.Tensor, padding: int) -> torch.Tensor:
    """(B, C, H, W) in any memory layout -> zero-padded (H + 2p, W + 2p, C, B), contiguous."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(height + 2 * padding, width + 2 * padding, channels, batch)
    # As one 2-D transpose, (B, H*W*C) -> (H*W*C, B): twice as fast as copying the 4-D permutation.
    hwc_b = x.permute(0, 2, 3, 1).reshape(batch, -1).t().contiguous()
    padded[padding:padding + height, padding:padding + width] = hwc_b.view(height, width, channels, batch)
    return padded


def _from_hwcb(x_hwcb: torch.Tensor, padding: int) -> torch.Tensor:
    """The inverse of _to_hwcb: the interior of (H + 2p, W + 2p, C, B) -> channels-last (B, C, H, W)."""
    height, width = x_hwcb.shape[0] - 2 * padding, x_hwcb.shape[1] - 2 * padding
    channels, batch = x_hwcb.shape[2:]
    interior = x_hwcb[padding:padding + height, padding:padding + width].reshape(-1, batch)
    return interior.t().contiguous().view(batch, height, width, channels).permute(0, 3, 1, 2)


def _windows(x_hwcb: torch.Tensor, k: int, stride: int, rows: int, out_w: int) -> torch.Tensor:
    """(H, W, C, B) padded input, from its first row of interest -> a (rows, out_w, k, k*C*B) view:
    each of a patch's k rows is one contiguous run of k columns x C channels x B."""
    s_h, s_w = x_hwcb.stride(0), x_hwcb.stride(1)
    return x_hwcb.as_strided((rows, out_w, k, k * s_w), (stride * s_h, stride * s_w, s_h, 1))


def _gather(patches: torch.Tensor, x_hwcb: torch.Tensor, k: int, stride: int, first: int, rows: int, out_w: int) -> torch.Tensor:
    """Copy the patches of output rows first.. first+rows into patches, an (l, K, B) buffer."""
    windows = _windows(x_hwcb[first * stride:], k, stride, rows, out_w)
    patches.view(windows.shape).copy_(windows)
    return patches


class _LocallyConnectedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, kernel_size, stride, padding, out_h, out_w):
        batch = x.shape[0]
        # Under autocast compute in its dtype (bf16/fp16), as a conv would; backward casts back.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight = x.to(dtype), weight.to(dtype)
        positions, patch_size, out_channels = weight.shape
        x_hwcb = _to_hwcb(x, padding)
        ctx.save_for_backward(x_hwcb, weight)
        ctx.geometry = (kernel_size, stride, padding, out_h, out_w)
        result = torch.empty((batch, out_channels, out_h, out_w), dtype=dtype, device=x.device,
                             memory_format=torch.channels_last)
        # Channels innermost like the rest, so that a block's rows of O values move as wholes.
        bias_ohw = None if bias is None else bias.to(dtype).permute(1, 2, 0).contiguous().permute(2, 0, 1)
        blocks = _row_blocks(batch, max(patch_size, out_channels), x.element_size(), out_h, out_w)
        block_positions = blocks[0][1] * out_w
        patches = x.new_empty(block_positions, patch_size, batch)  # one block's (l, K, B)
        out = x.new_empty(block_positions, batch, out_channels)  # one block's (l, B, O)
        with torch.autocast(device_type, enabled=False):
            for first, rows in blocks:
                at, size = slice(first * out_w, (first + rows) * out_w), rows * out_w
                block = _gather(patches[:size], x_hwcb, kernel_size, stride, first, rows, out_w)
                torch.bmm(block.transpose(1, 2), weight[at], out=out[:size])  # (l, B, K) @ (l, K, O)
                # The block's (rows, W, B, O) into the result's rows, plus the bias.
                block_bohw = out[:size].view(rows, out_w, batch, -1).permute(2, 3, 0, 1)
                target = result[:, :, first:first + rows]
                if bias_ohw is None:
                    target.copy_(block_bohw)
                else:
                    torch.add(block_bohw, bias_ohw[:, first:first + rows], out=target)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x_hwcb, weight = ctx.saved_tensors
        k, stride, padding, out_h, out_w = ctx.geometry
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        channels, batch = x_hwcb.shape[2:]
        positions, patch_size, out_channels = weight.shape
        grad = grad_out.to(x_hwcb.dtype).permute(2, 3, 0, 1).reshape(positions, batch, -1)  # (L, B, O)
        if grad.stride(2) != 1:  # bmm takes each position's (B, O) rows in place when channels are innermost
            grad = grad.contiguous()
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        blocks = _row_blocks(batch, max(patch_size, out_channels), x_hwcb.element_size(), out_h, out_w)
        block_positions = blocks[0][1] * out_w
        # With both weight and bias gradients wanted, a row of ones after each block's K patch values
        # makes the weight-gradient matmul also sum the output gradient over the batch: the bias
        # gradient, without a second pass over the output gradient.
        ones_row = need_weight and need_bias
        grad_weight = None
        if need_weight:
            grad_weight = torch.empty_like(weight)
            patches = x_hwcb.new_empty(block_positions, patch_size + ones_row, batch)
            if ones_row:
                patches[:, patch_size].fill_(1)
                product = x_hwcb.new_empty(block_positions, patch_size + 1, out_channels)
                summed_grad = x_hwcb.new_empty(positions, out_channels)  # (L, O)
        grad_hwcb = torch.zeros_like(x_hwcb) if need_x else None
        for first, rows in blocks:
            at, size = slice(first * out_w, (first + rows) * out_w), rows * out_w
            if need_weight:
                block = _gather(patches[:size, :patch_size], x_hwcb, k, stride, first, rows, out_w)
                if ones_row:  # (l, K + 1, B) @ (l, B, O)
                    torch.bmm(patches[:size], grad[at], out=product[:size])
                    grad_weight[at] = product[:size, :patch_size]
                    summed_grad[at] = product[:size, patch_size]
                else:
                    torch.bmm(block, grad[at], out=grad_weight[at])
            if need_x:  # (l, K, O) @ (l, O, B): each patch's gradient, batch innermost
                grad_patches = torch.bmm(weight[at], grad[at].transpose(1, 2)).view(rows, out_w, k, k, channels, batch)
                target = grad_hwcb[first * stride:]
                span_h, span_w = stride * (rows - 1) + 1, stride * (out_w - 1) + 1
                for i in range(k):  # scatter each kernel offset back onto the (overlapping) input pixels
                    for j in range(k):
                        # (rows, out_w, C, B) patch values onto input rows i.., columns j.. of (H, W, C, B)
                        target[i:i + span_h:stride, j:j + span_w:stride] += grad_patches[:, :, i, j]
        grad_x = _from_hwcb(grad_hwcb, padding).to(x_dtype) if need_x else None
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight_dtype)
        grad_bias = None
        if need_bias:  # (L, O) summed over the batch -> (O, out_h, out_w)
            if not ones_row:
                summed_grad = grad.sum(1)
            grad_bias = summed_grad.view(out_h, out_w, -1).permute(2, 0, 1).to(bias_dtype).contiguous()
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def locally_connected2d(x, weight, bias, kernel_size: int, stride: int, padding: int, output_size: tuple[int, int]):
    """The layer's computation as a function of its weight (positions, k*k*in, out) and bias
    (out, out_h, out_w) or None, for layers that compute their per-position weight (soft sharing)."""
    return _LocallyConnectedFunction.apply(x, weight, bias, kernel_size, stride, padding, *output_size)


class LocallyConnected2d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: tuple[int, int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        positions = set_geometry(self, in_channels, out_channels, input_size, kernel_size, stride, padding)
        self.weight = nn.Parameter(torch.empty(positions, kernel_size * kernel_size * in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Conv2d (kaiming_uniform with a=sqrt(5) -> U(-1/sqrt(fan_in), ..)),
        # with the same fan-in, so shared and unshared twins start at the same scale.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def as_conv_filters(self, weight_like: torch.Tensor) -> torch.Tensor:
        """The weight (or a tensor laid out like it, such as its gradient) as one conv filter bank
        per position: (positions, out_channels, in_channels, k, k), a view."""
        k = self.kernel_size
        return weight_like.view(-1, k, k, self.in_channels, self.out_channels).permute(0, 4, 3, 1, 2)

    @torch.no_grad()
    def copy_from_conv(self, conv: nn.Conv2d) -> "LocallyConnected2d":
        """Give every position the conv's filter and bias (then this layer computes the conv)."""
        self.as_conv_filters(self.weight).copy_(conv.weight.unsqueeze(0).expand(len(self.weight), *conv.weight.shape))
        if self.bias is not None:
            self.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(self.bias))
        return self

    @run_eagerly_under_compile
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return locally_connected2d(x, self.weight, self.bias, self.kernel_size, self.stride, self.padding, self.output_size)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )
